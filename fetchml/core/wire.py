"""The base of the wire models: the `Wire` model, the JSON-integer types and the shared limits
and patterns every domain's models use (fetchml.core.models re-exports them)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

JOB_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# Resource counts are stored in 32-bit INTEGER columns (PostgreSQL int4); an unbounded int
# would fail only at INSERT time, deep in the writer, instead of as a 422 naming the field.
MAX_INT32 = 2**31 - 1


def _json_integer(v: Any) -> Any:
    # Before any coercion: the server validates leniently, and `true`, `"5"` or `5.0` must be
    # a 422, not silently an int.
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be a JSON integer")
    return v


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
NonNegInt = Annotated[JsonInt, Field(ge=0, le=MAX_INT32)]

# A run-time limit in minutes (tasks and Jupyter services), beyond the contract: one minute to
# one year; None: no limit. A server may set a lower ceiling (FETCHML_MAX_TIME_LIMIT_MINUTES).
# The constraints sit on the optional type, so /schema shows them (and the description).
MAX_TIME_LIMIT_MINUTES = 525_600
TimeLimitMinutes = Annotated[
    JsonInt | None,
    Field(
        ge=1,
        le=MAX_TIME_LIMIT_MINUTES,
        description="Beyond the contract: minutes it may run before it is stopped "
        "(docs/scheduling.md#time-limits). A task stopped so fails with error `time limit` and "
        "is not retried.",
    ),
]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


# Free-form JSON is stored and served again; past this depth the JSON encoders give up (the
# response serializer at ~500 levels), which would turn a stored task into a permanent 500.
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON-like value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest
