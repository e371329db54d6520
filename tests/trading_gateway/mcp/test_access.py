"""Who may read and do what through MCP, clean tool errors, and the audit row of every call.

Real management server and gateway; no bot runs here (tests/trading_gateway/mcp/test_bots.py runs them).
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from management_server.audit.models import AuditEntry
from management_server.config import ManagementSettings
from management_server.main import create_app as create_management
from management_server.users.models import Role
from tests.enrollment import enroll_settings
from tests.helpers import async_wait_for, serve
from tests.management_server.conftest import Management, bearer
from tests.trading_gateway.mcp.conftest import Stack, gateway_settings_for
from tests.trading_gateway.mcp.helpers import error_text, http_client, raw_session, result_data, websocket_client
from trading_gateway.main import create_app as create_gateway
from trading_gateway.mcp.errors import ToolDenied
from trading_gateway.mcp.management import ManagementApi

TOOLS = {
    "list_bots",
    "get_bot",
    "get_open_trades",
    "get_trades",
    "get_performance",
    "get_logs",
    "start_bot",
    "stop_bot",
    "pause_bot",
    "resume_bot",
    "force_exit",
    "emergency_stop",
    "list_models",
    "deploy_model",
    "rollback_model",
    "get_predictions",
}


async def mcp_rows(stack: Stack, count: int) -> list[AuditEntry]:
    async def arrived() -> list[AuditEntry]:
        rows = [r for r in await stack.management.audit() if r.via == "mcp"]
        return rows if len(rows) >= count else []

    return await async_wait_for(arrived, timeout=20, what=f"{count} MCP audit rows")


def row_text(row: AuditEntry) -> str:
    return json.dumps({c.name: getattr(row, c.name) for c in AuditEntry.__table__.columns}, default=str)


async def test_tools_and_resources_are_listed_with_scopes_and_annotations(stack: Stack) -> None:
    token = await stack.account("alice@example.com")
    bot_id = await stack.bot(token, "alpha")
    async with http_client(stack.http_url, token) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = (await client.list_resource_templates()).resource_templates
        listed = (await client.list_resources()).resources
    assert set(tools) == TOOLS
    for name in ("list_bots", "get_bot", "get_logs", "list_models", "get_predictions"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is True, name
        assert "Needs the 'read' scope." in (tools[name].description or "")
    for name in ("stop_bot", "force_exit", "emergency_stop"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.destructive_hint) == (False, True), name
    for name in ("start_bot", "pause_bot", "resume_bot", "deploy_model"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.destructive_hint) == (False, False), name
    emergency = tools["emergency_stop"].input_schema
    assert emergency["additionalProperties"] is False
    assert set(emergency["properties"]) == {"confirm", "bot_ids", "scope", "reason"}
    assert tools["get_bot"].input_schema["required"] == ["bot_id"]
    assert {t.uri_template for t in templates} == {"bot://{bot_id}/status", "bot://{bot_id}/trades"}
    assert [r.uri for r in listed] == ["fleet://summary", f"bot://{bot_id}/status"]


async def test_a_users_agent_sees_and_touches_only_their_own_bots(stack: Stack) -> None:
    alice = await stack.account("alice@example.com")
    bob = await stack.account("bob@example.com")
    admin = await stack.account("root@example.com", Role.admin)
    alices = await stack.bot(alice, "alice-bot")
    bobs = await stack.bot(bob, "bob-bot")

    async with websocket_client(stack.ws_url, alice) as client:
        listed = result_data(await client.call_tool("list_bots", {}))
        assert [b["id"] for b in listed["bots"]] == [alices]
        assert result_data(await client.call_tool("get_bot", {"bot_id": alices}))["name"] == "alice-bot"
        for tool, arguments in (
            ("get_bot", {"bot_id": bobs}),
            ("get_open_trades", {"bot_id": bobs}),
            ("get_logs", {"bot_id": bobs}),
            ("get_trades", {"bot_id": bobs}),
            ("start_bot", {"bot_id": bobs}),
            ("pause_bot", {"bot_id": bobs}),
            ("force_exit", {"bot_id": bobs, "trade_id": "all"}),
        ):
            assert error_text(await client.call_tool(tool, arguments)) == "No such bot.", tool
        refused = error_text(await client.call_tool("emergency_stop", {"bot_ids": [bobs], "confirm": True}))
        assert refused == f"No such bot: {bobs}. Nothing was halted."
        everyone = error_text(await client.call_tool("emergency_stop", {"scope": "all", "confirm": True}))
        assert everyone.startswith("Only an admin may halt the whole fleet")
        with pytest.raises(MCPError) as hidden:
            await client.read_resource(f"bot://{bobs}/status")
        assert hidden.value.code == -32002
        assert hidden.value.message == f"No such bot: {bobs}."
        summary = json.loads(_text(await client.read_resource("fleet://summary")))
        assert summary["bots"] == 1

    assert (await stack.rest_bot(bob, bobs))["desired_state"] == "stopped"  # nothing reached Bob's bot
    async with http_client(stack.http_url, admin) as client:
        listed = result_data(await client.call_tool("list_bots", {}))
        assert {b["id"] for b in listed["bots"]} == {alices, bobs}
        assert result_data(await client.call_tool("get_bot", {"bot_id": bobs}))["name"] == "bob-bot"

    rows = await mcp_rows(stack, 15)
    denied_scope = [r for r in rows if r.action == "mcp.emergency_stop"]
    assert [r.outcome for r in denied_scope] == ["failure", "denied"]
    assert {r.actor for r in rows} == {"alice@example.com", "root@example.com"}


def _text(result: types.ReadResourceResult) -> str:
    [content] = result.contents
    assert isinstance(content, types.TextResourceContents)
    assert content.mime_type == "application/json"
    return content.text


async def test_a_read_scoped_personal_token_cannot_trade(stack: Stack) -> None:
    alice = await stack.account("alice@example.com")
    bot_id = await stack.bot(alice)
    reader = await stack.pat(alice, ["read"], name="read-only agent")
    async with http_client(stack.http_url, reader, mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert result_data(await client.call_tool("list_bots", {}))["count"] == 1
        for tool, arguments in (
            ("start_bot", {"bot_id": bot_id}),
            ("pause_bot", {"bot_id": bot_id}),
            ("force_exit", {"bot_id": bot_id, "trade_id": 1}),
            ("emergency_stop", {"scope": "mine", "confirm": True}),
            ("deploy_model", {"bot_id": bot_id, "model_id": str(uuid.uuid4())}),
        ):
            message = error_text(await client.call_tool(tool, arguments))
            assert message.startswith(f"This token lacks the 'trade' scope, which {tool} needs"), message
    assert (await stack.rest_bot(alice, bot_id))["desired_state"] == "stopped"
    rows = await mcp_rows(stack, 6)
    assert [(r.action, r.outcome) for r in rows[1:]] == [
        ("mcp.start_bot", "denied"),
        ("mcp.pause_bot", "denied"),
        ("mcp.force_exit", "denied"),
        ("mcp.emergency_stop", "denied"),
        ("mcp.deploy_model", "denied"),
    ]
    assert all(r.details is not None and r.details["auth_type"] == "pat" for r in rows)


async def test_tool_errors_are_clean_messages(stack: Stack) -> None:
    alice = await stack.account("alice@example.com")
    bot_id = await stack.bot(alice)
    async with raw_session(stack.ws_url, alice) as raw:
        await raw.initialize()
        bad_id = await raw.call("get_bot", {"bot_id": "not-a-uuid"})
        assert bad_id["isError"] is True
        [text] = bad_id["content"]
        assert text["text"].startswith("Invalid arguments: bot_id: Input should be a valid UUID")
        assert "not-a-uuid" not in text["text"]
        extra = await raw.call("list_bots", {"verbose": True})
        assert extra["content"][0]["text"].startswith("Invalid arguments: verbose: Extra inputs are not permitted")
        both = await raw.call("emergency_stop", {"confirm": True})
        assert "give either" in both["content"][0]["text"]
        stringly = await raw.call("emergency_stop", {"confirm": "yes", "scope": "mine"})
        assert stringly["content"][0]["text"].startswith("Invalid arguments: confirm: Input should be a valid boolean")
        not_confirmed = await raw.call("emergency_stop", {"scope": "mine"})
        assert not_confirmed["content"][0]["text"].startswith("emergency_stop was not confirmed, so nothing was done")
        not_here = await raw.call("get_performance", {"bot_id": bot_id})
        assert not_here["content"][0]["text"] == (
            f"Bot {bot_id} does not run on this gateway ({stack.settings.gateway_id}): it is stopped (start it with "
            "start_bot)."
        )
        unknown = await raw.request("tools/call", {"name": "rm_rf", "arguments": {}})
        assert unknown["error"]["code"] == -32602
        assert unknown["error"]["message"] == "Unknown tool 'rm_rf': tools/list names the tools."
        await raw.ws.send("this is not json")
        assert json.loads(await raw.ws.recv()) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": "Parse error: the frame is not JSON."},
        }
        await raw.ws.send(json.dumps({"hello": "world"}))
        assert json.loads(await raw.ws.recv())["error"]["code"] == -32600
        still_open = await raw.call("list_bots")
        assert still_open["structuredContent"]["count"] == 1


async def test_model_tools_answer_what_the_management_server_answers(stack: Stack) -> None:
    alice = await stack.account("alice@example.com")
    bob = await stack.account("bob@example.com")
    alices = await stack.bot(alice, "alice-bot")
    bobs = await stack.bot(bob, "bob-bot")
    no_model = str(uuid.uuid4())
    async with http_client(stack.http_url, alice) as client:
        assert result_data(await client.call_tool("list_models", {})) == {"models": []}
        cases = [
            (
                "deploy_model",
                {"bot_id": alices, "model_id": no_model},
                "POST",
                f"/bots/{alices}/model",
                {"model_id": no_model},
            ),
            (
                "deploy_model",
                {"bot_id": bobs, "model_id": no_model},
                "POST",
                f"/bots/{bobs}/model",
                {"model_id": no_model},
            ),
            ("rollback_model", {"bot_id": alices}, "POST", f"/bots/{alices}/model/rollback", None),
            (
                "get_predictions",
                {"bot_id": alices, "pair": "BTC/USDT"},
                "GET",
                f"/bots/{alices}/predictions?pair=BTC/USDT",
                None,
            ),
            ("get_predictions", {"bot_id": bobs}, "GET", f"/bots/{bobs}/predictions", None),
        ]
        for tool, arguments, method, path, body in cases:
            rest = await stack.api.request(method, "/api/v1" + path, json=body, headers=bearer(alice))
            assert 400 <= rest.status_code < 500, rest.text
            assert error_text(await client.call_tool(tool, arguments)) == rest.json()["detail"], tool


def test_a_route_the_management_server_lacks_is_said_as_such() -> None:
    missing = ManagementApi._problem("GET", "/models?x=1", httpx.Response(404, json={"detail": "Not Found"}))
    assert missing.message == (
        "The management server does not offer this (GET /api/v1/models is missing): it needs to be upgraded to a "
        "version that does."
    )
    not_allowed = ManagementApi._problem(
        "POST", "/bots/x/model", httpx.Response(405, json={"detail": "Method Not Allowed"})
    )
    assert "POST /api/v1/bots/x/model is missing" in not_allowed.message
    assert ManagementApi._problem("GET", "/bots/x", httpx.Response(404, json={"detail": "No such bot."})).message == (
        "No such bot."
    )
    invalid = ManagementApi._problem(
        "POST", "/bots/x/forceexit", httpx.Response(422, json={"detail": [{"loc": ["body", "trade_id"], "msg": "bad"}]})
    )
    assert invalid.message == "trade_id: bad"
    assert isinstance(ManagementApi._problem("GET", "/bots", httpx.Response(401, json={})), ToolDenied)
    failed = ManagementApi._problem("GET", "/bots", httpx.Response(502, text="<html>bad gateway</html>"))
    assert failed.message == "The management server failed to handle this (HTTP 502); try again shortly."


async def test_every_call_leaves_an_audit_row_without_the_token(stack: Stack) -> None:
    alice = await stack.account("alice@example.com")
    bot_id = await stack.bot(alice)
    pat = await stack.pat(alice, ["read", "trade"])
    calls: list[tuple[str, dict[str, Any]]] = [
        ("list_bots", {}),
        ("get_bot", {"bot_id": bot_id}),
        ("get_trades", {"bot_id": bot_id, "limit": 5}),
        ("get_bot", {"bot_id": str(uuid.uuid4())}),
        ("emergency_stop", {"scope": "mine", "reason": "drill"}),
    ]
    async with websocket_client(stack.ws_url, alice) as client:
        for tool, arguments in calls:
            await client.call_tool(tool, arguments)
        await client.read_resource(f"bot://{bot_id}/trades")
    async with http_client(stack.http_url, pat) as client:
        await client.call_tool("list_bots", {})
        await client.call_tool("get_bot", {"bot_id": "x", "token": pat})

    rows = await mcp_rows(stack, 8)
    assert [(r.action, r.outcome) for r in rows] == [
        ("mcp.list_bots", "success"),
        ("mcp.get_bot", "success"),
        ("mcp.get_trades", "success"),
        ("mcp.get_bot", "failure"),
        ("mcp.emergency_stop", "failure"),
        ("mcp.read_resource", "success"),
        ("mcp.list_bots", "success"),
        ("mcp.get_bot", "failure"),
    ]
    user_id = rows[0].actor_id
    assert len({r.correlation_id for r in rows}) == len(rows)  # one id per call
    for row in rows:
        assert (row.via, row.actor, row.actor_id) == ("mcp", "alice@example.com", user_id)
        assert row.correlation_id is not None
        if row.details is not None and row.details["transport"] == "websocket":
            assert row.correlation_id.startswith("mcp-")  # else the HTTP request's X-Request-ID
        text = row_text(row)
        assert alice not in text
        assert pat not in text
        assert row.details is not None
        assert row.details["gateway_id"] == stack.settings.gateway_id
    assert rows[1].target_type == "bot"
    assert rows[1].target_id == bot_id
    assert rows[2].details is not None
    assert rows[2].details["arguments"] == {"bot_id": bot_id, "limit": 5}
    assert rows[3].reason == "No such bot."
    assert rows[4].reason is not None
    assert rows[4].reason.startswith("emergency_stop was not confirmed")
    assert rows[4].details is not None
    assert rows[4].details["arguments"] == {"scope": "mine", "reason": "drill"}
    assert rows[5].details is not None
    assert rows[5].details["uri"] == f"bot://{bot_id}/trades"
    assert rows[7].details is not None
    assert rows[7].details["arguments"] == {"bot_id": "x", "token": "***"}
    assert [r.details["transport"] for r in rows if r.details] == ["websocket"] * 6 + ["streamable_http"] * 2
    assert [r.details["auth_type"] for r in rows if r.details] == ["access"] * 6 + ["pat"] * 2
    # The REST calls the tools made as Alice carry the same correlation id as the MCP row that made them.
    rest = [r for r in await stack.management.audit() if r.via == "rest" and r.correlation_id == rows[4].correlation_id]
    assert rest == []  # an unconfirmed emergency stop reached nothing


async def test_with_the_management_server_away_tools_say_so(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack, AsyncExitStack() as management_running:
        app = create_management(management_settings)
        url = await management_running.enter_async_context(serve(app))
        client = await management_running.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        management = Management(app, url, client, management_settings)
        settings = gateway_settings_for(tmp_path, redis_url, url)
        await enroll_settings(management_settings.database_url.get_secret_value(), settings)
        gateway_url = await stack.enter_async_context(serve(create_gateway(settings)))
        ws_url = gateway_url.replace("http://", "ws://") + "/mcp/ws"
        await management.create_user("alice@example.com")
        await management.create_user("root@example.com", role=Role.admin)
        alice = (await management.login("alice@example.com"))["access_token"]
        admin = (await management.login("root@example.com"))["access_token"]
        alice_agent = await stack.enter_async_context(websocket_client(ws_url, alice))
        assert result_data(await alice_agent.call_tool("list_bots", {}))["count"] == 0  # keys fetched, then:
        await management_running.aclose()

        unreachable = "The management server can't be reached right now; try again in a moment."
        assert error_text(await alice_agent.call_tool("pause_bot", {"bot_id": str(uuid.uuid4())})) == unreachable
        # Her bot list was answered a moment ago (kept up to a second); after her change it is asked afresh.
        assert error_text(await alice_agent.call_tool("list_bots", {})) == unreachable
        mine = error_text(await alice_agent.call_tool("emergency_stop", {"scope": "mine", "confirm": True}))
        assert mine.startswith(
            f"Nothing was halted: the management server could not confirm which bots are yours ({unreachable})"
        )
        # The gateway knows the keys: a new connection is still accepted, and an admin may halt any bot here.
        async with websocket_client(ws_url, admin) as admin_agent:
            bot_id = str(uuid.uuid4())
            halted = error_text(await admin_agent.call_tool("emergency_stop", {"bot_ids": [bot_id], "confirm": True}))
        assert (
            halted == f"Nothing was halted on this gateway, and the management server could not be told: {unreachable}"
        )


async def test_an_admins_token_without_the_admin_scope_has_no_admin_power(stack: Stack) -> None:
    """Admin power is the role *and* the admin scope, at the gateway and in every MCP tool too."""
    alice = await stack.account("alice@example.com")
    root = await stack.account("root@example.com", Role.admin)
    alices = await stack.bot(alice, "alice-bot")
    trader = await stack.pat(root, ["read", "trade"], name="admin trading agent")
    async with http_client(stack.http_url, trader) as client:
        assert result_data(await client.call_tool("list_bots", {}))["bots"] == []
        assert error_text(await client.call_tool("get_bot", {"bot_id": alices})) == "No such bot."
        everyone = error_text(await client.call_tool("emergency_stop", {"scope": "all", "confirm": True}))
        assert "This personal access token lacks the 'admin' scope" in everyone
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        for method, path in (("GET", "/api/v1/bots"), ("POST", "/api/v1/emergency-stop")):
            answer = await http.request(method, path, json={"scope": "all"}, headers=bearer(trader))
            assert answer.status_code == 403, (path, answer.text)
            assert "admin' scope" in answer.json()["detail"]
        assert (await http.get("/api/v1/bots", headers=bearer(root))).status_code == 200  # the login token has it
    assert (await stack.rest_bot(alice, alices))["desired_state"] == "stopped"


async def test_a_callers_bot_list_is_reused_a_moment_and_refreshed_by_their_own_change(stack: Stack) -> None:
    """list_bots asks the management server at most once a FREQFLEET_MCP_LIST_SECONDS per caller; a change the caller
    makes through this gateway (even a refused one) makes the next list fresh, and a list is never older than the
    bound."""
    alice = await stack.account("alice@example.com")
    first = await stack.bot(alice, "first")
    async with websocket_client(stack.ws_url, alice) as agent:
        assert result_data(await agent.call_tool("list_bots", {}))["count"] == 1
        await stack.bot(alice, "second")  # over REST: this gateway doesn't know of it
        stop = await agent.call_tool("stop_bot", {"bot_id": first})  # a change through the gateway (refused: stopped)
        assert stop.is_error
        assert result_data(await agent.call_tool("list_bots", {}))["count"] == 2  # asked afresh at once

        await stack.bot(alice, "third")
        asked = time.monotonic()
        while (count := result_data(await agent.call_tool("list_bots", {}))["count"]) != 3:
            assert count == 2
            assert time.monotonic() - asked < stack.settings.mcp_list_seconds + 5, "the list was never refreshed"
            await anyio.sleep(0.1)
