"""AI agents drive a real Freqtrade bot through MCP: the SDK's client over Streamable HTTP and over our
WebSocket transport, and raw JSON-RPC over a plain WebSocket.

Each runs the same session on a real management server and gateway, with a real bot trading on the
exchange simulator: initialize, list tools and resources, ``list_bots``, ``start_bot``, ``get_bot`` on
the running bot, ``pause_bot`` and ``resume_bot`` with the bot's state following, ``emergency_stop``
without ``confirm`` (nothing happens) and with it (halted here at once, and at the management server).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import psutil
import pytest
from mcp import Client

from tests.helpers import async_wait_for
from tests.trading_gateway.mcp.conftest import Stack
from tests.trading_gateway.mcp.helpers import RawSession, http_client, raw_session, websocket_client

pytestmark = pytest.mark.slow


@dataclass
class Answer:
    is_error: bool
    data: Any  # the JSON result, or the error's text

    def ok(self) -> Any:
        assert not self.is_error, self.data
        return self.data


@dataclass
class Agent:
    """One MCP client, whatever its kind: call a tool, read a resource, list tools and resources."""

    call: Callable[[str, dict[str, Any]], Awaitable[Answer]]
    read: Callable[[str], Awaitable[Any]]
    tools: Callable[[], Awaitable[set[str]]]
    resources: Callable[[], Awaitable[list[str]]]
    protocol_version: str


def sdk_agent(client: Client) -> Agent:
    async def call(tool: str, arguments: dict[str, Any]) -> Answer:
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            block = result.content[0]
            assert isinstance(block, types.TextContent)
            return Answer(True, block.text)
        return Answer(False, result.structured_content)

    async def read(uri: str) -> Any:
        [content] = (await client.read_resource(uri)).contents
        assert isinstance(content, types.TextResourceContents)
        return json.loads(content.text)

    async def tools() -> set[str]:
        return {t.name for t in (await client.list_tools()).tools}

    async def resources() -> list[str]:
        return [r.uri for r in (await client.list_resources()).resources]

    return Agent(call, read, tools, resources, client.protocol_version)


def raw_agent(raw: RawSession, protocol_version: str) -> Agent:
    async def call(tool: str, arguments: dict[str, Any]) -> Answer:
        result = await raw.call(tool, arguments)
        if result["isError"]:
            return Answer(True, result["content"][0]["text"])
        assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
        return Answer(False, result["structuredContent"])

    async def read(uri: str) -> Any:
        answer = await raw.request("resources/read", {"uri": uri})
        [content] = answer["result"]["contents"]
        assert content["mimeType"] == "application/json"
        return json.loads(content["text"])

    async def tools() -> set[str]:
        return {t["name"] for t in (await raw.request("tools/list"))["result"]["tools"]}

    async def resources() -> list[str]:
        return [r["uri"] for r in (await raw.request("resources/list"))["result"]["resources"]]

    return Agent(call, read, tools, resources, protocol_version)


@asynccontextmanager
async def sdk_http(stack: Stack, token: str) -> AsyncIterator[Agent]:
    async with http_client(stack.http_url, token) as client:
        yield sdk_agent(client)


@asynccontextmanager
async def sdk_websocket(stack: Stack, token: str) -> AsyncIterator[Agent]:
    async with websocket_client(stack.ws_url, token) as client:
        yield sdk_agent(client)


@asynccontextmanager
async def raw_websocket(stack: Stack, token: str) -> AsyncIterator[Agent]:
    async with raw_session(stack.ws_url, token) as raw:
        answer = await raw.initialize()
        result = answer["result"]
        assert result["serverInfo"]["name"] == "freqfleet-gateway"
        assert set(result["capabilities"]) >= {"tools", "resources"}
        yield raw_agent(raw, result["protocolVersion"])


async def wait_state(agent: Agent, bot_id: str, state: str, timeout: float = 90) -> dict[str, Any]:
    """Until get_bot reads ``state`` both at the management server and in the bot (Freqtrade's own state)."""

    async def reached() -> dict[str, Any] | None:
        bot: dict[str, Any] = (await agent.call("get_bot", {"bot_id": bot_id})).ok()
        live = bot.get("live", {})
        if bot["actual_state"] == state and live.get("actual") == state and live.get("freqtrade_state") == state:
            return bot
        return None

    return await async_wait_for(reached, timeout=timeout, interval=0.25, what=f"the bot to be {state}")


async def drive_a_bot(stack: Stack, connect: Callable[[Stack, str], Any], *, reads: bool = False) -> None:
    token = await stack.account("alice@example.com")
    bot_id = await stack.bot(token, "mcp-driven")
    async with connect(stack, token) as agent:
        assert "emergency_stop" in await agent.tools()
        assert await agent.resources() == ["fleet://summary", f"bot://{bot_id}/status"]
        [listed] = (await agent.call("list_bots", {})).ok()["bots"]
        assert (listed["id"], listed["desired_state"], listed["on_this_gateway"]) == (bot_id, "stopped", False)

        started = (await agent.call("start_bot", {"bot_id": bot_id})).ok()
        assert (started["desired_state"], started["gateway_id"]) == ("running", stack.settings.gateway_id)
        assert uuid.UUID(started["command_id"])
        running = await wait_state(agent, bot_id, "running")
        assert running["on_this_gateway"] is True
        assert running["live"]["source"].startswith("this gateway")
        pid = running["live"]["pid"]
        assert psutil.pid_exists(pid)
        assert "profit" in running["live"]
        assert isinstance(running["live"]["open_trades"], list)
        status = await agent.read(f"bot://{bot_id}/status")
        assert (status["id"], status["live"]["pid"]) == (bot_id, pid)
        summary = await agent.read("fleet://summary")
        assert summary["on_this_gateway"]["bots"] == 1

        if reads:
            trades = (await agent.call("get_open_trades", {"bot_id": bot_id})).ok()
            assert isinstance(trades["open_trades"], list)
            performance = (await agent.call("get_performance", {"bot_id": bot_id})).ok()["performance"]
            assert "profit_all_coin" in performance
            assert "trade_count" in performance
            logs = (await agent.call("get_logs", {"bot_id": bot_id, "limit": 20})).ok()
            assert 0 < len(logs["lines"]) <= 20
            managed = stack.gateway.state.fleet.bot(uuid.UUID(bot_id))
            password = managed.files.read_config()["api_server"]["password"]
            assert all(password not in line for line in logs["lines"])

        paused = (await agent.call("pause_bot", {"bot_id": bot_id})).ok()
        assert paused["desired_state"] == "paused"
        await wait_state(agent, bot_id, "paused")
        resumed = (await agent.call("resume_bot", {"bot_id": bot_id})).ok()
        assert resumed["desired_state"] == "running"
        await wait_state(agent, bot_id, "running")

        refused = await agent.call("emergency_stop", {"bot_ids": [bot_id]})
        assert refused.is_error
        assert refused.data.startswith("emergency_stop was not confirmed")
        assert (await agent.call("get_bot", {"bot_id": bot_id})).ok()["live"]["pid"] == pid
        assert psutil.pid_exists(pid)

        halted = (await agent.call("emergency_stop", {"bot_ids": [bot_id], "confirm": True, "reason": "test"})).ok()
        [here] = halted["this_gateway"]["results"]
        assert (here["bot_id"], here["outcome"]) == (bot_id, "halted")
        assert halted["management"]["results"][0]["bot_id"] == bot_id
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

        async def halted_everywhere() -> bool:
            bot = (await agent.call("get_bot", {"bot_id": bot_id})).ok()
            return bool(bot["desired_state"] == bot["actual_state"] == bot["live"]["actual"] == "halted")

        await async_wait_for(halted_everywhere, timeout=30, what="the bot to read halted everywhere")

    # The pause went through the management server as Alice, under the MCP call's correlation id.
    rows = await stack.management.audit()
    [pause] = [r for r in rows if r.action == "mcp.pause_bot"]
    [rest_pause, accepted, done] = [r for r in rows if r.action == "bot.pause"]
    assert done.outcome == "done"  # the bot reported paused
    assert (pause.via, rest_pause.via) == ("mcp", "rest")
    assert rest_pause.correlation_id == accepted.correlation_id == pause.correlation_id
    assert rest_pause.actor == accepted.actor == pause.actor == "alice@example.com"
    assert (rest_pause.outcome, accepted.outcome) == ("requested", "accepted")  # the gateway's answer, too
    [emergency] = [r for r in rows if r.action == "bot.emergency_stop"]
    assert emergency.actor == "alice@example.com"


async def test_sdk_client_over_streamable_http(trading_stack: Stack) -> None:
    await drive_a_bot(trading_stack, sdk_http, reads=True)


async def test_sdk_client_over_our_websocket_transport(trading_stack: Stack) -> None:
    await drive_a_bot(trading_stack, sdk_websocket)


async def test_raw_json_rpc_over_a_plain_websocket(trading_stack: Stack) -> None:
    await drive_a_bot(trading_stack, raw_websocket)
