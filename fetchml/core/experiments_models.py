"""Wire models of experiments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from fetchml.core.enums import ExperimentStatus
from fetchml.core.wire import Wire


class CreateExperimentRequest(Wire):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=4096)] | None = None
    commit_id: Annotated[str, Field(max_length=128)] | None = None


class Experiment(Wire):
    id: str
    name: str
    description: str | None = None
    commit_id: str | None = None
    created_at: datetime
    status: ExperimentStatus
    user_id: str | None = None
