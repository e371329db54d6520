"""Per-user limits on the gateway's MCP server: calls, connections, in-flight requests, message size, sessions;
refusals audited as samples, not one row each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from management_server.config import ManagementSettings
from tests.helpers import async_wait_for
from tests.trading_gateway.mcp.conftest import running_stack
from tests.trading_gateway.mcp.helpers import auth_headers, error_text, raw_session, result_data, websocket_client
from tests.trading_gateway.mcp.test_auth import INITIALIZE, MCP_ACCEPT

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "limits-test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
LIMITS = {
    "mcp_calls_per_minute": 20,
    "mcp_connections_per_user": 2,
    "mcp_in_flight_per_connection": 1,
    "mcp_max_message_bytes": 64 * 1024,
    "mcp_sessions_per_user": 2,
}


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    return management_settings.model_copy(update={"rate_limit_enabled": False})


async def test_one_users_flood_meets_its_own_limits_and_bob_is_served(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(management_settings, redis_url, tmp_path, **LIMITS) as stack:
        alice = await stack.account("alice@example.com")
        bob = await stack.account("bob@example.com")

        # Calls: 20 a minute per user, then a tool error saying when to try again.
        async with websocket_client(stack.ws_url, alice) as client:
            answers: list[Any] = [await client.call_tool("list_bots", {}) for _ in range(25)]
            unknown = [await client.call_tool("no_such_tool", {}) for _ in range(5)]
        assert sum(not a.is_error for a in answers) == 20
        refusals = [error_text(a) for a in [*answers, *unknown] if a.is_error]
        assert len(refusals) == 10
        assert all("Too many calls: at most 20 per minute per user" in r and "try again in" in r for r in refusals)
        async with websocket_client(stack.ws_url, bob) as client:
            assert "bots" in result_data(await client.call_tool("list_bots", {}))

        # The refusals are audited as one sampled row per tool (the next one, after the minute, carries the count).
        async def limited_rows() -> list[Any]:
            rows = [r for r in await stack.management.audit() if r.via == "mcp" and r.reason == "rate limited"]
            return rows if len(rows) >= 2 else []  # the two tools' rows are written independently

        rows = await async_wait_for(limited_rows, timeout=20, what="the sampled refusals")
        assert sorted((r.details or {}).get("tool") for r in rows) == ["list_bots", "unknown_tool"]
        assert stack.gateway.state.mcp.auditor.sampled == 8

        # Connections: two per user; a third is refused with why, until one closes.
        async with raw_session(stack.ws_url, bob), raw_session(stack.ws_url, bob):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(stack.ws_url, subprotocols=["mcp"], additional_headers=auth_headers(bob)):  # type: ignore[list-item]
                    pass
            assert refused.value.response.status_code == 429
            assert b"Too many MCP connections: at most 2" in (refused.value.response.body or b"")
        async with raw_session(stack.ws_url, bob) as raw:  # closed ones are counted out
            await raw.initialize()

            # A frame over the size limit is refused unparsed; the connection goes on.
            await raw.ws.send(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "ping", "pad": "x" * 70_000}))
            answer = json.loads(await raw.ws.recv())
            assert answer["id"] is None
            assert "more than the 65536 this gateway takes" in answer["error"]["message"]
            assert "result" in await raw.request("ping")

            # In flight: one unanswered request per connection here. A pipelined burst is not refused: the gateway
            # reads the next request only once the previous one is answered (the rest waits in the client's socket).
            for i in range(5):
                message = {"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/call"}
                await raw.ws.send(json.dumps(message | {"params": {"name": "list_bots", "arguments": {}}}))
            answers = [json.loads(await raw.ws.recv()) for _ in range(5)]
            assert [a["id"] for a in answers] == [1000, 1001, 1002, 1003, 1004]  # one at a time, in order
            assert all("result" in a for a in answers), answers

        # Streamable HTTP sessions: two per user; a third initialize gets a 429 saying why; bob's still opens.
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:

            async def initialize(token: str) -> httpx.Response:
                return await http.post("/mcp", json=INITIALIZE, headers=MCP_ACCEPT | auth_headers(token))

            opened = [await initialize(alice) for _ in range(2)]
            assert [r.status_code for r in opened] == [200, 200]
            third = await initialize(alice)
            assert third.status_code == 429
            assert "Too many MCP sessions: at most 2 per user" in third.json()["detail"]
            assert int(third.headers["Retry-After"]) > 0
            assert (await initialize(bob)).status_code == 200
            # A self-contained 2026-07-28 request opens no session: it is served at the session cap.
            modern = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "list_bots", "arguments": {}, "_meta": MODERN_META},
            }
            stateless = await http.post(
                "/mcp",
                json=modern,
                headers=MCP_ACCEPT
                | auth_headers(alice)
                | {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "list_bots"},
            )
            assert stateless.status_code == 200, stateless.text
            # Ending one (DELETE with its id) makes room.
            ended = await http.delete(
                "/mcp", headers=auth_headers(alice) | {"mcp-session-id": opened[0].headers["mcp-session-id"]}
            )
            assert ended.status_code in (200, 204)
            assert (await initialize(alice)).status_code == 200
