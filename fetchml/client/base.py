"""HTTP plumbing shared by the domain clients: auth header, envelope -> typed exception."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from fetchml.core.errors import ERRORS_BY_CODE, FetchmlError, InternalError, RateLimitedError

M = TypeVar("M", bound=BaseModel)


class ServerUnreachableError(FetchmlError):
    """No HTTP answer at all: refused, DNS, timeout. Client-side only; never on the wire."""

    code = "SERVER_UNREACHABLE"
    status = 0
    default_message = "Server unreachable"


class ServerTimeoutError(ServerUnreachableError):
    """The server took the connection (or the request) but sent no answer in time: it is up but
    stalled, so a write it got may still happen. A kind of ServerUnreachableError for callers
    that treat both alike."""

    code = "SERVER_TIMEOUT"
    default_message = "The server did not answer in time"


class UnexpectedResponseError(FetchmlError):
    """A 2xx answer that is not the contract's shape: not a fetchml server, or a mismatched one."""

    code = "UNEXPECTED_RESPONSE"
    status = 0
    default_message = "Unexpected response from server"


def _raise_for_envelope(resp: httpx.Response) -> None:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and {"error", "code", "trace_id"} <= body.keys():
        cls = ERRORS_BY_CODE.get(str(body["code"]), InternalError)
        if cls is RateLimitedError:
            raise RateLimitedError(
                str(body["error"]),
                retry_after=int(resp.headers.get("Retry-After", "1")),
                trace_id=body["trace_id"],
            )
        raise cls(str(body["error"]), trace_id=str(body["trace_id"]))
    raise InternalError(
        f"Unexpected HTTP {resp.status_code} from server", trace_id=resp.headers.get("X-Trace-Id")
    )


class Transport:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"User-Agent": "fetchml-client"}
        if api_key:
            headers["X-API-Key"] = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Every request is a path on base_url, so a plain http:// server never uses TLS; building
        # the default TLS context anyway loads the CA bundle (~40 ms on each CLI command).
        verify = self.base_url.startswith("https://")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify)

    def _transport_error(self, exc: httpx.TransportError, what: str) -> ServerUnreachableError:
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            # Connected, sent (part of) the request, then silence: not "unreachable".
            return ServerTimeoutError(
                f"The fetchml server at {self.base_url} accepted the connection but did not answer "
                f"within {self.timeout:g}s"
            )
        return ServerUnreachableError(f"{what} {self.base_url}: {exc}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "Cannot reach fetchml server at") from exc
        if resp.status_code >= 400:
            _raise_for_envelope(resp)
        return resp

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read incrementally (log follow, downloads)."""
        try:
            with self.http.stream(method, path, **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for_envelope(resp)
                yield resp
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "Lost the fetchml server at") from exc

    def close(self) -> None:
        self.http.close()


def abort_response(resp: httpx.Response) -> None:
    """Close a streamed response from any thread so that a read blocked on it returns now.

    `Response.close()` alone closes the socket, which does not wake a thread blocked in
    `recv()` on Linux; shutting the socket down first does (that read then ends in an error
    the reader treats as a drop or a stop)."""
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with suppress(OSError):  # already closed, or never connected
            sock.shutdown(socket.SHUT_RDWR)
    with suppress(httpx.HTTPError, OSError, RuntimeError):  # the reader may be closing it too
        resp.close()


def segment(value: str) -> str:
    """One path segment, escaped: an id like `../keys/k1` must not reach another route."""
    if value in ("", ".", ".."):
        raise ValueError(f"invalid id {value!r}")
    return quote(value, safe="")


def _unexpected(resp: httpx.Response) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        f"Unexpected response to {resp.request.method} {resp.request.url.path} "
        f"(HTTP {resp.status_code}); is {resp.request.url.scheme}://{resp.request.url.netloc.decode()} "
        "a fetchml server of a matching version?"
    )


def parse(resp: httpx.Response, model: type[M]) -> M:
    """The response body as `model`; a body of another shape is an UnexpectedResponseError."""
    try:
        return model.model_validate(resp.json())
    except ValueError as exc:  # JSON decoding and pydantic validation errors alike
        raise _unexpected(resp) from exc


def parse_list(resp: httpx.Response, model: type[M]) -> list[M]:
    try:
        return TypeAdapter(list[model]).validate_python(resp.json())  # type: ignore[valid-type]
    except ValueError as exc:
        raise _unexpected(resp) from exc


class DomainClient:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
