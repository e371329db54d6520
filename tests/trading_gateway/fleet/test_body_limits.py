"""Bounded bodies on the gateway: 200 MiB to every route, unauthenticated, is answered before it is read."""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import OVERSIZED, api_requests, send_oversized
from tests.trading_gateway.conftest import Tokens, running_gateway, settings_for
from trading_gateway.config import GatewaySettings

MIB = 1024 * 1024


async def test_oversized_bodies_are_refused_before_they_are_read(
    simulator: SimulatorProcess, tokens: Tokens, redis_url: str, tmp_path: Path, cleanup: list[GatewaySettings]
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    async with running_gateway(settings) as gw:
        requests = [*api_requests(gw.app), ("POST", "/mcp"), ("POST", "/mcp/")]
        server = psutil.Process()  # the gateway runs in this process
        await send_oversized(gw.url, "POST", "/api/v1/emergency-stop", chunked=False)  # warm up
        before = server.memory_info().rss
        for method, path in requests:
            status, sent = await send_oversized(gw.url, method, path, chunked=False)
            assert status == 413, (method, path, status)
            assert sent < OVERSIZED // 10, (method, path, sent)
            status, sent = await send_oversized(gw.url, method, path, chunked=True)
            assert status == 413 or (status < 500 and sent < OVERSIZED // 10), (method, path, status, sent)
        grown = server.memory_info().rss - before
        assert grown < 10 * MIB, f"RSS grew by {grown / MIB:.1f} MiB"
