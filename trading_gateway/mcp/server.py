"""The gateway's MCP server: the official SDK's low-level ``Server`` with our tools and resources.

One :class:`McpService` per gateway process, built in the app's lifespan. It owns the SDK ``Server``
(the handlers below), the SDK's ``StreamableHTTPSessionManager`` (run in the lifespan; serves
``/mcp``), the client of the management server and the auditor. Both transports hand the same
``Server`` their messages with the authenticated :class:`~trading_gateway.mcp.auth.Caller` attached:
our WebSocket transport as the message's ``request_context``; Streamable HTTP as the Starlette
request, whose scope carries the caller (see :mod:`trading_gateway.mcp.transports`).

Every ``tools/call`` and ``resources/read``:

1. gets its own correlation id (on Streamable HTTP the request's ``X-Request-ID``, the client's or the
   one the gateway made; on a WebSocket a new ``mcp-...`` id per call), used by its log lines, its calls
   to the management server and its audit row;
2. re-verifies the caller's token when the connection is a WebSocket (it may have expired or been
   revoked since the handshake);
3. validates the arguments (a message naming the fields, never the values), checks the scope
   (``read`` or ``trade``), then runs the tool;
4. is audited (``MCP_CALL`` on the bus; see :mod:`trading_gateway.mcp.audit`) with its outcome,
   before the answer goes out.

A tool's problem is a result with ``isError: true`` and a message a model can act on; a bug is logged
with its traceback and answered with a generic message and the request id. An unknown tool, an
unknown resource and a missing scope on a resource are JSON-RPC errors, as the protocol asks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from asgi_correlation_id import correlation_id
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request

from shared.auth.claims import Scope
from shared.http import is_safe_request_id
from shared.logging import get_logger
from trading_gateway.auth import GatewayAuth
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.service import Fleet
from trading_gateway.mcp import resources, untrusted
from trading_gateway.mcp.audit import McpAuditor, Outcome, Target
from trading_gateway.mcp.auth import Caller, McpAuth, Refused
from trading_gateway.mcp.errors import ToolDenied, ToolFailure, ToolProblem
from trading_gateway.mcp.limits import CallRate, Connections, LimitReached, McpLimits, Sessions
from trading_gateway.mcp.management import ManagementApi
from trading_gateway.mcp.tools import TOOLS, TOOLS_BY_NAME, ToolContext, jsonable

log = get_logger(__name__)

CALLER_SCOPE_KEY = "freqfleet.mcp.caller"
RESOURCE_NOT_FOUND = -32002
SERVER_NAME = "freqfleet-gateway"
INSTRUCTIONS = (
    "Freqfleet trading gateway: read and control your Freqtrade bots. Bot ids are UUIDs (list_bots). Read tools "
    "need a token with the 'read' scope, tools that act need 'trade'; you see and act on your own bots only (an "
    "admin: all). Actions change the bot's desired state; its actual state follows within seconds (get_bot). "
    'emergency_stop exits every open trade at market and needs "confirm": true. ' + untrusted.NOTE
)


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """The authenticated caller the transport attached to this message."""
    request = ctx.request
    if isinstance(request, Caller):
        return request
    if isinstance(request, Request):
        caller = request.scope.get(CALLER_SCOPE_KEY)
        if isinstance(caller, Caller):
            return caller
    raise MCPError(code=types.INVALID_REQUEST, message="Not authenticated.")


def _call_id(ctx: ServerRequestContext[Any, Any]) -> str:
    request = ctx.request
    if isinstance(request, Request):
        header = request.headers.get("x-request-id")
        if header and is_safe_request_id(header):
            return header
    return f"mcp-{uuid.uuid4().hex}"


def _invalid_arguments(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return "Invalid arguments: " + "; ".join(problems) + ". See the tool's input schema."


def _text_result(data: dict[str, Any]) -> types.CallToolResult:
    payload = jsonable(data)
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(payload, separators=(",", ":")))],
        structured_content=payload,
    )


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


class McpService:
    def __init__(
        self, settings: GatewaySettings, fleet: Fleet, gateway_auth: GatewayAuth, events: EventPublisher
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self.auth = McpAuth(gateway_auth, settings.mcp_allowed_origins)
        # Requests as the caller, vouched for by this gateway: the management server limits each user, not us.
        self.api = ManagementApi(
            settings.management_url,
            settings.mcp_management_timeout,
            identity=fleet.identity,
            list_seconds=settings.mcp_list_seconds,
        )
        self.auditor = McpAuditor(events, settings.gateway_id, settings.mcp_refusal_sample_seconds)
        self.server: Server[Any] = Server(
            SERVER_NAME,
            version="0.1.0",
            title="Freqfleet trading gateway",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )
        self.limits = McpLimits(
            calls=CallRate(settings.mcp_calls_per_minute),
            connections=Connections(settings.mcp_connections_per_user),
            sessions=Sessions(settings.mcp_sessions_per_user, settings.mcp_session_idle),
            max_message_bytes=settings.mcp_max_message_bytes,
            in_flight_per_connection=settings.mcp_in_flight_per_connection,
        )
        # Answers as JSON rather than SSE streams: no tool streams progress, and a JSON answer is cheaper.
        self.sessions = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            session_idle_timeout=settings.mcp_session_idle,
            max_request_body_size=settings.mcp_max_message_bytes,
            max_sessions=settings.mcp_max_sessions,
        )
        self.init_options = self.server.create_initialization_options()
        self._tools = [
            types.Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description + f" Needs the '{tool.scope.value}' scope. " + untrusted.NOTE,
                input_schema=tool.input_schema(),
                annotations=tool.annotations,
            )
            for tool in TOOLS
        ]

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve: the Streamable HTTP session manager runs until the gateway stops."""
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.api.aclose)
            await stack.enter_async_context(self.sessions.run())
            yield

    def context(self, caller: Caller) -> ToolContext:
        return ToolContext(caller=caller, fleet=self.fleet, api=self.api)

    # ------------------------------------------------------------------ tools

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller_of(ctx)
        return types.ListToolsResult(tools=self._tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = caller_of(ctx)
        cid = _call_id(ctx)
        token = correlation_id.set(cid)
        started = time.perf_counter()
        tool = TOOLS_BY_NAME.get(params.name)
        arguments = params.arguments or {}
        target: Target | None = None
        outcome: Outcome = "success"
        reason: str | None = None
        try:
            try:
                self.limits.calls.hit(str(caller.subject))
            except LimitReached as exc:
                outcome, reason = "failure", "rate limited"
                return _error_result(exc.message)
            if tool is None:
                outcome, reason = "failure", "unknown tool"
                raise MCPError(
                    code=types.INVALID_PARAMS,
                    message=f"Unknown tool {params.name[:100]!r}: tools/list names the tools.",
                )
            try:
                if caller.transport == "websocket":
                    caller = await self.auth.recheck(caller)
                try:
                    args = tool.arguments.model_validate(arguments)
                except ValidationError as exc:
                    raise ToolFailure(_invalid_arguments(exc)) from None
                target = tool.target(args)
                if not caller.has_scope(tool.scope):
                    raise ToolDenied(
                        f"This token lacks the '{tool.scope.value}' scope, which {tool.name} needs: use a token "
                        f"with '{tool.scope.value}' (a login, or a personal access token minted with it)."
                    )
                result = _text_result(await tool.run(self.context(caller), args))
            except Refused as exc:
                outcome, reason = ("denied" if exc.status in (401, 403) else "failure"), exc.detail
                return _error_result(exc.detail)
            except ToolProblem as exc:
                outcome, reason = exc.outcome, exc.message
                return _error_result(exc.message)
            except anyio.get_cancelled_exc_class():
                outcome, reason = "failure", "cancelled: the client went away or cancelled the call"
                raise
            except Exception:
                log.exception("mcp tool failed", tool=tool.name, actor=caller.label)
                outcome, reason = "failure", "internal error"
                return _error_result(
                    f"The gateway failed to run {tool.name} (an internal error, logged with request id {cid}); "
                    "try again, and tell an operator if it keeps failing."
                )
            log.info("mcp tool called", tool=tool.name, actor=caller.label, outcome="success")
            return result
        finally:
            if outcome != "success":
                log.info("mcp tool refused", tool=params.name[:100], actor=caller.label, outcome=outcome, reason=reason)
            with anyio.CancelScope(shield=True):  # a cancelled call is audited too
                await self.auditor.record(
                    caller,
                    kind="tool",
                    name=params.name if tool is not None else "unknown_tool",
                    arguments=arguments if tool is not None else {"tool": params.name[:100], "arguments": arguments},
                    outcome=outcome,
                    reason=reason,
                    target=target,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    correlation_id=cid,
                )
            correlation_id.reset(token)

    # ------------------------------------------------------------------ resources

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = caller_of(ctx)
        if not caller.has_scope(Scope.read):
            return types.ListResourcesResult(resources=[])
        try:
            listed = await resources.listed(self.context(caller))
        except ToolProblem as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=exc.message) from None
        return types.ListResourcesResult(resources=listed)

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        caller_of(ctx)
        return types.ListResourceTemplatesResult(resource_templates=resources.templates())

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        cid = _call_id(ctx)
        token = correlation_id.set(cid)
        started = time.perf_counter()
        uri = str(params.uri)
        target: Target | None = None
        outcome: Outcome = "success"
        reason: str | None = None
        try:
            try:
                self.limits.calls.hit(str(caller.subject))
            except LimitReached as exc:
                outcome, reason = "failure", "rate limited"
                raise MCPError(
                    code=types.INVALID_REQUEST, message=exc.message, data={"retry_after": exc.retry_after}
                ) from None
            try:
                if caller.transport == "websocket":
                    caller = await self.auth.recheck(caller)
                what = resources.parse_uri(uri)
                target = what.target
                if not caller.has_scope(Scope.read):
                    raise ToolDenied("This token lacks the 'read' scope, which reading resources needs.")
                data = await resources.read(self.context(caller), what)
            except resources.UnknownResource as exc:
                outcome, reason = "failure", str(exc)
                raise MCPError(code=RESOURCE_NOT_FOUND, message=str(exc), data={"uri": uri[:200]}) from None
            except Refused as exc:
                outcome, reason = ("denied" if exc.status in (401, 403) else "failure"), exc.detail
                raise MCPError(code=types.INVALID_REQUEST, message=exc.detail) from None
            except ToolProblem as exc:
                outcome, reason = exc.outcome, exc.message
                code = types.INVALID_REQUEST if isinstance(exc, ToolDenied) else types.INTERNAL_ERROR
                raise MCPError(code=code, message=exc.message, data={"uri": uri[:200]}) from None
            except anyio.get_cancelled_exc_class():
                outcome, reason = "failure", "cancelled: the client went away or cancelled the read"
                raise
            except Exception:
                log.exception("mcp resource read failed", uri=uri[:200], actor=caller.label)
                outcome, reason = "failure", "internal error"
                raise MCPError(
                    code=types.INTERNAL_ERROR,
                    message=f"The gateway failed to read {uri[:200]} (an internal error, logged with request id "
                    f"{cid}); try again.",
                ) from None
            return types.ReadResourceResult(
                contents=[
                    types.TextResourceContents(
                        uri=uri, mime_type=resources.JSON, text=json.dumps(jsonable(data), separators=(",", ":"))
                    )
                ]
            )
        finally:
            with anyio.CancelScope(shield=True):
                await self.auditor.record(
                    caller,
                    kind="resource",
                    name=uri or "?",
                    arguments={},
                    outcome=outcome,
                    reason=reason,
                    target=target,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    correlation_id=cid,
                )
            correlation_id.reset(token)
