"""Both MCP transports refuse before accepting: no token, a wrong audience, an expired or revoked token,
a foreign Origin, a WebSocket without the ``mcp`` subprotocol. Real management server and gateway."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from management_server.security.tokens import sign_token
from shared.auth import TokenType
from tests.management_server.conftest import bearer
from tests.trading_gateway.mcp.conftest import ALLOWED_ORIGIN, Stack
from tests.trading_gateway.mcp.helpers import error_text, http_client, raw_session, result_data, websocket_client
from trading_gateway.mcp.auth import RECHECK_SECONDS

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def http_refusal(stack: Stack, headers: dict[str, str], path: str = "/mcp") -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        return await http.post(path, json=INITIALIZE, headers=MCP_ACCEPT | headers)


async def ws_refusal(
    stack: Stack, headers: dict[str, str], *, subprotocols: list[str] | None = None, query: str = "", **kw: Any
) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            stack.ws_url + query,
            subprotocols=["mcp"] if subprotocols is None else (subprotocols or None),  # type: ignore[misc]
            additional_headers=headers,
            **kw,
        ):
            pass
    response = refused.value.response
    return response.status_code, response.body or b""


def mint(stack: Stack, user_id: uuid.UUID, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "issuer": "freqfleet",
        "audience": "freqfleet",
        "subject": user_id,
        "role": "user",
        "token_type": TokenType.access,
        "lifetime": timedelta(minutes=15),
        "version": 0,
        "scopes": frozenset({"read", "trade"}),
    } | changes
    token, _, _ = sign_token(stack.management.app.state.keys, **fields)
    return token


async def test_no_token_wrong_audience_expired_and_revoked_tokens_are_refused(stack: Stack) -> None:
    user = await stack.management.create_user("alice@example.com")
    good = mint(stack, user.id)
    wrong_audience = mint(stack, user.id, audience="another-service")
    expired = mint(stack, user.id, now=datetime.now(UTC) - timedelta(hours=1))
    login = (await stack.management.login("alice@example.com"))["access_token"]
    revoked = await stack.pat(login, ["read", "trade"], name="soon-revoked")
    listed = await stack.api.get("/api/v1/users/me/tokens", headers=bearer(login))
    [pat_row] = listed.json()
    assert (
        await stack.api.delete(f"/api/v1/users/me/tokens/{pat_row['id']}", headers=bearer(login))
    ).status_code == 204

    no_token = await http_refusal(stack, {})
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert no_token.json()["detail"].startswith("Not authenticated: send an access token")
    status, body = await ws_refusal(stack, {})
    assert status == 401
    assert b"Not authenticated" in body

    for token in (wrong_audience, expired, revoked, good + "x", "not-a-jwt"):
        refused = await http_refusal(stack, bearer(token))
        assert refused.status_code == 401, refused.text
        assert refused.json() == {"detail": "Invalid or expired token: log in again."}
        assert token not in refused.text
        status, body = await ws_refusal(stack, bearer(token))
        assert (status, body) == (401, b'{"detail":"Invalid or expired token: log in again."}')
        status, _ = await ws_refusal(stack, {}, query=f"?token={token}")
        assert status == 401

    # The same user's good token is accepted on both: the refusals above were about the tokens.
    async with http_client(stack.http_url, good) as client:
        assert result_data(await client.call_tool("list_bots", {}))["bots"] == []
    async with websocket_client(stack.ws_url, good) as client:
        assert result_data(await client.call_tool("list_bots", {}))["count"] == 0


async def test_foreign_origins_and_missing_subprotocols_are_refused(stack: Stack) -> None:
    token = await stack.account("alice@example.com")
    foreign = {"Origin": "https://evil.example"}

    refused = await http_refusal(stack, bearer(token) | foreign)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("This origin may not use the gateway's MCP endpoints")
    status, body = await ws_refusal(stack, bearer(token) | foreign)
    assert status == 403
    assert b"FREQFLEET_MCP_ALLOWED_ORIGINS" in body
    status, _ = await ws_refusal(stack, bearer(token), origin="null")  # type: ignore[arg-type]
    assert status == 403

    for subprotocols in ([], ["graphql-ws"]):
        status, body = await ws_refusal(stack, bearer(token), subprotocols=subprotocols)
        assert status == 400
        assert b"Open the WebSocket with the subprotocol 'mcp'" in body

    # An allowed browser origin, and the token in the query (for clients that can't set headers).
    async with connect(stack.ws_url + f"?token={token}", subprotocols=["mcp"], origin=ALLOWED_ORIGIN) as ws:  # type: ignore[list-item,arg-type]
        assert ws.subprotocol == "mcp"
    # Streamable HTTP takes the token from the header only.
    query_only = await http_refusal(stack, {}, path=f"/mcp?token={token}")
    assert query_only.status_code == 401
    allowed = await http_refusal(stack, bearer(token) | {"Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["result"]["serverInfo"]["name"] == "freqfleet-gateway"


async def test_a_token_revoked_while_the_websocket_is_open_stops_working(stack: Stack) -> None:
    login = await stack.account("alice@example.com")
    pat = await stack.pat(login, ["read"], name="agent")
    [row] = (await stack.api.get("/api/v1/users/me/tokens", headers=bearer(login))).json()
    async with websocket_client(stack.ws_url, pat) as client:
        assert result_data(await client.call_tool("list_bots", {}))["count"] == 0
        deleted = await stack.api.delete(f"/api/v1/users/me/tokens/{row['id']}", headers=bearer(login))
        assert deleted.status_code == 204
        revoked_at = time.monotonic()
        # Revocation is checked at most once a RECHECK_SECONDS on an open connection: every call that starts later
        # than that after the revocation is refused.
        calls: list[tuple[float, bool]] = []
        while not calls or not calls[-1][1]:
            started = time.monotonic()
            answer = await client.call_tool("list_bots", {})
            refused = answer.is_error and error_text(answer) == "Invalid or expired token: log in again."
            calls.append((started - revoked_at, refused))
            assert started - revoked_at < 10, calls
            if not refused:
                await anyio.sleep(0.1)  # polling: well within the per-user call limit
        assert all(refused for after, refused in calls if after > RECHECK_SECONDS), calls


async def test_a_websocket_ends_when_its_token_expires(stack: Stack) -> None:
    user = await stack.management.create_user("alice@example.com")
    short = mint(stack, user.id, lifetime=timedelta(seconds=2))
    async with raw_session(stack.ws_url, short) as raw:
        await raw.initialize()
        with pytest.raises(ConnectionClosed) as closed:
            await _until_closed(raw.ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert "token expired" in closed.value.rcvd.reason


async def _until_closed(ws: Any) -> None:
    with anyio.fail_after(30):  # the server closes at the token's expiry (2 s)
        while True:
            await ws.recv()
