"""The two MCP transports of the gateway, both authenticated before anything is accepted.

**WebSocket at** ``/mcp/ws`` (subprotocol ``mcp``; the current SDK line has no WebSocket transport, so
this is ours). Before the handshake is accepted: the ``Origin`` is checked, the ``mcp`` subprotocol
must be offered, and the token (``Authorization: Bearer`` or ``?token=``) verified; a refusal is an
HTTP answer (401, 403, 400 or 503 with ``{"detail": ...}``; the ASGI WebSocket denial response), so a
client sees why. Once accepted, each text frame is one JSON-RPC message: it is parsed with the SDK's
message model and handed to the SDK's ``Server.run`` over a pair of memory streams, exactly as the
SDK's own stdio transport does, with the :class:`~trading_gateway.mcp.auth.Caller` attached to every
message as its ``request_context``; each message the server sends is one text frame back. A frame that
is not JSON gets a JSON-RPC parse error (-32700), one that is JSON but no JSON-RPC message an invalid
request error (-32600), both with ``id: null``; the connection stays open. Requests are served
concurrently, so a client may pipeline them. The connection ends when the client closes it.

**Streamable HTTP at** ``/mcp``: the SDK's ``StreamableHTTPSessionManager`` (run in the gateway's
lifespan), behind our check of the ``Origin`` and the bearer token on **every** request (401/403/503
with ``{"detail": ...}`` otherwise). The caller is put in the request's scope, where the tool handlers
find it, and as the SDK's ``AuthenticatedUser``, so a session (``Mcp-Session-Id``) can only be used with
a token of the user who opened it. Both protocol eras work: the 2025 ``initialize`` handshake with
sessions, and 2026-07-28's self-contained requests.
"""

from __future__ import annotations

import contextlib
import json
import time

import anyio
import mcp_types as types
from fastapi import FastAPI
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.logging import get_logger
from trading_gateway.mcp.auth import Caller, Refused
from trading_gateway.mcp.limits import LimitReached
from trading_gateway.mcp.server import CALLER_SCOPE_KEY, McpService

log = get_logger(__name__)

HTTP_PATH = "/mcp"
WEBSOCKET_PATH = "/mcp/ws"
SUBPROTOCOL = "mcp"
NO_SUBPROTOCOL = "Open the WebSocket with the subprotocol 'mcp' (header 'Sec-WebSocket-Protocol: mcp')."
NOT_READY = "The gateway's MCP server is not running (the gateway is starting or stopping); try again shortly."
STREAM_BUFFER = 32
SESSION_HEADER = "mcp-session-id"
REFUSED_BEFORE_PAUSE = 16  # refused calls a connection gets at full speed; then one every PAUSE_OVER_LIMIT s
PAUSE_OVER_LIMIT = 1.0


def _service(scope: Scope) -> McpService | None:
    app = scope.get("app")
    service = getattr(getattr(app, "state", None), "mcp", None)
    return service if isinstance(service, McpService) else None


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _refusal(exc: Refused) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _sdk_user(caller: Caller) -> AuthenticatedUser:
    """The caller as the SDK's session manager knows principals: a session stays with the user who opened it."""
    claims = caller.claims
    return AuthenticatedUser(
        AccessToken(
            token=caller.token,
            client_id=str(claims.subject),
            scopes=sorted(claims.scopes),
            expires_at=int(claims.expires_at.timestamp()),
            subject=str(claims.subject),
        )
    )


class StreamableHttpEndpoint:
    """``/mcp``: the SDK's Streamable HTTP session manager, behind our authentication."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = _service(scope)
        if service is None:
            await JSONResponse({"detail": NOT_READY}, status_code=503)(scope, receive, send)
            return
        try:
            caller = await service.auth.authenticate(
                Headers(scope=scope), transport="streamable_http", client_ip=_client_ip(scope)
            )
        except Refused as exc:
            await _refusal(exc)(scope, receive, send)
            return
        scope[CALLER_SCOPE_KEY] = caller
        scope["user"] = _sdk_user(caller)
        user = str(caller.subject)
        sessions = service.limits.sessions
        headers = Headers(scope=scope)
        session_id = headers.get(SESSION_HEADER)
        opening = headers.get("mcp-method") in (None, "initialize")  # 2026-07-28 requests name their method
        if session_id is None and scope.get("method") == "POST" and opening:
            try:
                sessions.may_open(user)  # a request without a session may open one (initialize)
            except LimitReached as exc:
                await _too_many(exc)(scope, receive, send)
                return
        elif session_id is not None:
            if scope.get("method") == "DELETE":
                sessions.ended(user, session_id)
            else:
                sessions.used(user, session_id)

        async def noting_sessions(message: Message) -> None:
            if message["type"] == "http.response.start" and session_id is None:
                opened = Headers(raw=message.get("headers", [])).get(SESSION_HEADER)
                if opened:
                    sessions.used(user, opened)
            await send(message)

        await service.sessions.handle_request(scope, receive, noting_sessions)


def _too_many(exc: LimitReached) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=429, headers={"Retry-After": str(exc.retry_after)})


async def _deny(websocket: WebSocket, exc: Refused) -> None:
    try:
        await websocket.send_denial_response(_refusal(exc))
    except RuntimeError:  # a server without the denial-response extension: close the handshake instead
        await websocket.close(code=1008, reason=exc.detail[:120])


def _too_large(size: int, limit: int) -> types.JSONRPCError:
    message = (
        f"Invalid request: the message has {size} bytes, more than the {limit} this gateway takes "
        "(FREQFLEET_MCP_MAX_MESSAGE_BYTES)."
    )
    return types.JSONRPCError(
        jsonrpc="2.0", id=None, error=types.ErrorData(code=types.INVALID_REQUEST, message=message)
    )


def _duplicate(request_id: types.RequestId) -> types.JSONRPCError:
    message = "Invalid request: a request with this id is still being answered on this connection; use a new id."
    return types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=types.INVALID_REQUEST, message=message)
    )


def _undecodable(text: str) -> types.JSONRPCError:
    try:
        json.loads(text)
    except ValueError:
        error = types.ErrorData(code=types.PARSE_ERROR, message="Parse error: the frame is not JSON.")
    else:
        error = types.ErrorData(
            code=types.INVALID_REQUEST, message="Invalid request: the frame is not a JSON-RPC 2.0 message."
        )
    return types.JSONRPCError(jsonrpc="2.0", id=None, error=error)


async def mcp_websocket(websocket: WebSocket) -> None:
    """``/mcp/ws``: MCP over a WebSocket, one JSON-RPC message per text frame."""
    service = _service(websocket.scope)
    if service is None:
        await _deny(websocket, Refused(503, NOT_READY))
        return
    client_ip = _client_ip(websocket.scope)
    try:
        service.auth.check_origin(websocket.headers, "websocket")
        if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            log.info("mcp websocket refused: no mcp subprotocol", client_ip=client_ip)
            raise Refused(400, NO_SUBPROTOCOL)
        caller = await service.auth.authenticate(
            websocket.headers, transport="websocket", client_ip=client_ip, query=websocket.query_params
        )
    except Refused as exc:
        await _deny(websocket, exc)
        return
    user = str(caller.subject)
    try:
        service.limits.connections.open(user)
    except LimitReached as exc:
        await _deny(websocket, Refused(429, exc.message, {"Retry-After": str(exc.retry_after)}))
        return
    try:
        await websocket.accept(subprotocol=SUBPROTOCOL)
        log.info("mcp websocket connected", actor=caller.label, client_ip=client_ip)
        await _serve(websocket, service, caller)
        log.info("mcp websocket closed", actor=caller.label, client_ip=client_ip)
    finally:
        service.limits.connections.close(user)


async def _serve(websocket: WebSocket, service: McpService, caller: Caller) -> None:
    incoming_in, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](STREAM_BUFFER)
    outgoing, outgoing_out = anyio.create_memory_object_stream[SessionMessage](STREAM_BUFFER)
    errors_out = outgoing.clone()  # the reader answers frames that never reach the server
    limits = service.limits
    in_flight: set[types.RequestId] = set()  # requests handed to the server and not answered yet
    room = [anyio.Event()]  # set when an answer leaves: a reader waiting for room looks again

    user = str(caller.subject)
    over_limit = 0  # frames read while the user was over the call limit (each one is refused)

    async def receive() -> None:
        nonlocal over_limit
        async with incoming_in, errors_out:
            while True:
                if (pause := limits.calls.wait(user)) <= 0:
                    over_limit = 0
                else:
                    over_limit += 1
                    if over_limit > REFUSED_BEFORE_PAUSE:
                        # A client that keeps calling past its limit and the answers saying so: read its next
                        # request only a little later, so a flood costs the gateway a few refusals a second.
                        await anyio.sleep(min(pause, PAUSE_OVER_LIMIT))
                while len(in_flight) >= limits.in_flight_per_connection:
                    # As many requests in flight as a connection may have: read no more until one is answered.
                    await room[0].wait()
                    room[0] = anyio.Event()
                try:
                    frame = await websocket.receive()
                except (WebSocketDisconnect, RuntimeError):
                    return
                if frame["type"] == "websocket.disconnect":
                    return
                text = frame.get("text")
                if text is None:
                    data = frame.get("bytes") or b""
                    text = data.decode("utf-8", errors="replace")
                if len(text) > limits.max_message_bytes:  # not parsed: refused on its size alone
                    await errors_out.send(SessionMessage(_too_large(len(text), limits.max_message_bytes)))
                    continue
                try:
                    message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
                except (ValidationError, ValueError):
                    await errors_out.send(SessionMessage(_undecodable(text)))
                    continue
                if isinstance(message, types.JSONRPCRequest):
                    if message.id in in_flight:
                        await errors_out.send(SessionMessage(_duplicate(message.id)))
                        continue
                    in_flight.add(message.id)
                metadata = ServerMessageMetadata(request_context=caller)
                await incoming_in.send(SessionMessage(message, metadata=metadata))

    async def transmit() -> None:
        async with outgoing_out:
            async for session_message in outgoing_out:
                answered = session_message.message
                if isinstance(answered, types.JSONRPCResponse | types.JSONRPCError) and answered.id is not None:
                    in_flight.discard(answered.id)
                    room[0].set()
                text = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await websocket.send_text(text)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    # The client is gone: end the connection (a reader waiting for room would wait forever).
                    tasks.cancel_scope.cancel()
                    return

    async def expire() -> None:
        """The connection lives as long as its token: it is closed when the token expires."""
        await anyio.sleep(max(0.0, caller.claims.expires_at.timestamp() - time.time()))
        log.info("mcp websocket closed: its token expired", actor=caller.label)
        with contextlib.suppress(Exception):
            await websocket.close(code=1008, reason="the token expired: reconnect with a fresh one")
        tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(receive)
        tasks.start_soon(transmit)
        tasks.start_soon(expire)
        try:
            await service.server.run(incoming, outgoing, service.init_options)
        finally:
            tasks.cancel_scope.cancel()


def install(app: FastAPI) -> None:
    """Add ``/mcp`` and ``/mcp/ws`` to the gateway (the service itself is made in the lifespan)."""
    app.router.routes.append(Route(HTTP_PATH, StreamableHttpEndpoint(), include_in_schema=False))
    app.router.routes.append(WebSocketRoute(WEBSOCKET_PATH, mcp_websocket))
