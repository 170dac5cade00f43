"""The authenticated proxy to a Jupyter service: every method and the WebSocket under
`/v1/jupyter/services/{service_id}/proxy/` (docs/jupyter.md).

The usual guard authenticates (X-API-Key; a WebSocket may offer the key as the subprotocol
`fetchml.key.<key>`), the service answers who may reach which service (owner and admins; 403
for another user's, 409 while it is not running) and gives its URL and token, and
fetchml.client.forward relays the request with `Authorization: token <token>`: users never need
the token here, and it never appears in a log line or an error message. Request bodies are
streamed up to FETCHML_JUPYTER_PROXY_MAX_BODY_BYTES (not the JSON body limit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Request, WebSocket, route, websocket
from litestar.enums import HttpMethod
from litestar.types import ASGIApp

from fetchml.client.forward import Forwarder, without_query_params
from fetchml.core.errors import BadGatewayError
from fetchml.core.jupyter import proxy_path
from fetchml.server.context import principal_of, services_of
from fetchml.server.middleware import PROXIED_KEY
from fetchml.server.security import USERS

ROOT = "/v1/jupyter/services/{service_id:str}/proxy"  # the `{path:path}` below never matches ''
PATH = ROOT + "/{path:path}"
PATHS = [ROOT, PATH]
CLIENT_STATE = "jupyter_proxy_client"
TOKEN_PARAMS = frozenset({"token"})
DOCUMENTED = [HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE]
# Relayed too, left out of /schema: its answers have no body to check against a schema. OPTIONS
# is Litestar's own (an Allow list): CORS preflights have no business here, every request
# through the proxy carries a key.
UNDOCUMENTED = [HttpMethod.HEAD]
_DESCRIPTION = (
    "Relays any request under the service's base URL to its Jupyter server (the same path: "
    "Jupyter runs with `--ServerApp.base_url` set to it), adding the service's token, so the "
    "owner and admins reach it with their API key alone. A WebSocket on the same path (kernel "
    "channels, terminals) is relayed too; browsers offer the key as the subprotocol "
    "`fetchml.key.<key>`. 403: another user's service; 409: not running; 413: a body over "
    "FETCHML_JUPYTER_PROXY_MAX_BODY_BYTES; 502 (code SERVICE_UNAVAILABLE): the Jupyter server "
    "did not answer. Any other status is Jupyter's own answer."
)


def drop_token_param(app: ASGIApp) -> ASGIApp:
    """Route middleware (it runs before the guards): a `?token=` (Jupyter's own login, which
    its pages and WebSocket URLs may carry) is not needed upstream, where the header
    authenticates, and must reach no log line, uvicorn's WebSocket lines included (they show
    the query string), also when the request is refused."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        scope["query_string"] = without_query_params(scope.get("query_string", b""), TOKEN_PARAMS)
        await app(scope, receive, send)

    return middleware


def _client(app: Litestar) -> httpx.AsyncClient:
    """One connection pool for every proxied request of this app."""
    client: httpx.AsyncClient | None = app.state.get(CLIENT_STATE)
    if client is None:
        client = Forwarder.make_client()
        app.state[CLIENT_STATE] = client
    return client


@asynccontextmanager
async def proxy_lifespan(app: Litestar) -> AsyncIterator[None]:
    try:
        yield
    finally:
        client: httpx.AsyncClient | None = app.state.get(CLIENT_STATE)
        if client is not None:
            del app.state[CLIENT_STATE]
            await client.aclose()


async def _forwarder(
    connection: Request[Any, Any, Any] | WebSocket[Any, Any, Any], service_id: str
) -> Forwarder:
    services = services_of(connection)
    url, token = await services.jupyter.proxy_target(principal_of(connection), service_id)
    base = proxy_path(service_id)
    # The URL is the worker's report, accepted only under the service's own base path (see
    # fetchml.services.jupyter); the forwarder refuses dot segments below it.
    try:
        return Forwarder(
            url,
            base,
            headers={"Authorization": f"token {token}"},
            client=_client(connection.app),
            max_body_bytes=services.settings.jupyter_proxy_max_body_bytes,
        )
    except ValueError:  # not an http(s) URL
        raise BadGatewayError("The service's reported address is not usable") from None


async def _proxy(request: Request[Any, Any, Any], service_id: str) -> ASGIApp:
    forwarder = await _forwarder(request, service_id)
    response = await forwarder.open(request.scope, request.receive)  # type: ignore[arg-type]
    request.scope[PROXIED_KEY] = True  # type: ignore[literal-required]
    return forwarder.respond(response)  # type: ignore[return-value]


@route(
    PATHS,
    http_method=DOCUMENTED,
    middleware=[drop_token_param],
    tags=["Jupyter"],
    status_code=200,
    opt={**USERS, "errors": (409, 413, 502)},
    summary="Proxy to a Jupyter service (beyond the contract)",
    description=_DESCRIPTION,
    response_description="Jupyter's own answer, relayed as it is",
    # The body is streamed by the forwarder, which applies its own limit.
    request_max_body_size=None,
)
async def jupyter_proxy(request: Request[Any, Any, Any], service_id: str) -> ASGIApp:
    return await _proxy(request, service_id)


@route(
    PATHS,
    http_method=UNDOCUMENTED,
    opt=USERS,
    middleware=[drop_token_param],
    include_in_schema=False,
    request_max_body_size=None,
)
async def jupyter_proxy_head(request: Request[Any, Any, Any], service_id: str) -> ASGIApp:
    return await _proxy(request, service_id)


@websocket(
    PATHS,
    opt=USERS,
    middleware=[drop_token_param],
    summary="Proxy to a Jupyter service's WebSocket (beyond the contract)",
)
async def jupyter_proxy_ws(socket: WebSocket[Any, Any, Any], service_id: str) -> None:
    forwarder = await _forwarder(socket, service_id)
    with socket.app.state["metrics"].open_stream("websocket"):
        await forwarder.websocket(socket.scope, socket.receive, socket.send)  # type: ignore[arg-type]
