"""Alice floods the gateway's MCP server; bob is served, memory stays bounded, no audit event is lost.

Real management server and gateway (in this process, so the process's RSS is the gateway's plus the test's). The
latencies under such a flood are measured by ``bench/flood.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from management_server.config import ManagementSettings
from shared.bus.streams import EVENTS_STREAM, MANAGEMENT_GROUP
from tests.helpers import async_wait_for
from tests.trading_gateway.mcp.conftest import running_stack
from tests.trading_gateway.mcp.helpers import auth_headers, raw_session, result_data, websocket_client
from tests.trading_gateway.mcp.test_auth import INITIALIZE, MCP_ACCEPT

MIB = 1024 * 1024


@pytest.fixture
def management_settings(management_settings: ManagementSettings) -> ManagementSettings:
    return management_settings.model_copy(update={"rate_limit_enabled": False})


async def test_alices_flood_leaves_bob_served_memory_bounded_and_no_event_trimmed(
    management_settings: ManagementSettings, redis_url: str, tmp_path: Path
) -> None:
    async with running_stack(management_settings, redis_url, tmp_path) as stack:
        alice = await stack.account("alice@example.com")
        bob = await stack.account("bob@example.com")
        process = psutil.Process()
        before = process.memory_info().rss

        async def pipelined() -> None:
            # 600 calls pipelined, half of them unknown tools, for up to 10 s: past her limit the gateway reads
            # her slowly (the rest waits in her socket), so she gives up, as a flooding client would.
            async with raw_session(stack.ws_url, alice) as raw:
                await raw.initialize()

                async def send() -> None:
                    for i in range(600):
                        name = "list_bots" if i % 2 else "no_such_tool"
                        message = {"jsonrpc": "2.0", "id": i + 10, "method": "tools/call"}
                        await raw.ws.send(json.dumps(message | {"params": {"name": name, "arguments": {}}}))

                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(send(), 10)

        async def big_frames() -> None:  # 8 frames of 1 MiB and more
            async with connect(stack.ws_url, subprotocols=["mcp"], additional_headers=auth_headers(alice)) as ws:  # type: ignore[list-item]
                for _ in range(8):
                    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "x" * MIB}))
                    with contextlib.suppress(ConnectionClosed):
                        await ws.recv()

        async def sessions() -> None:  # 300 session openings
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
                for _ in range(300):
                    await http.post("/mcp", json=INITIALIZE, headers=MCP_ACCEPT | auth_headers(alice))

        async def bob_served() -> list[Any]:
            async with websocket_client(stack.ws_url, bob) as client:
                return [result_data(await client.call_tool("list_bots", {})) for _ in range(20)]

        admin = await stack.admin()

        async def kill_switch_answers() -> list[int]:  # the gateway's own safety endpoints, throughout
            answers = []
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
                for _ in range(10):
                    answers.append((await http.get("/health/live")).status_code)
                    halt = await http.post("/api/v1/emergency-stop", json={"scope": "all"}, headers=admin)
                    answers.append(halt.status_code)
            return answers

        *_, bobs, safety = await asyncio.gather(
            pipelined(), big_frames(), sessions(), bob_served(), kill_switch_answers()
        )
        assert len(bobs) == 20  # every one of bob's calls answered with his bots
        assert safety == [200] * 20  # how fast: bench/flood.py
        grown = process.memory_info().rss - before
        assert grown < 100 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"

        # Alice's refusals were sampled, not audited one by one; the management server consumed every event.
        redis = aioredis.Redis.from_url(redis_url)
        try:

            async def consumed() -> bool:
                groups: Any = await redis.xinfo_groups(EVENTS_STREAM)
                group = next(g for g in groups if g["name"] == MANAGEMENT_GROUP.encode())
                return bool(group["lag"] == 0 and group["pending"] == 0)

            await async_wait_for(consumed, timeout=60, what="the management server to apply every event")
            length = await redis.xlen(EVENTS_STREAM)
        finally:
            await redis.aclose()
        assert length < 2000, length  # 1,000+ calls of alice's, far fewer events: nothing near the trim point
        assert stack.gateway.state.mcp.auditor.sampled > 0
