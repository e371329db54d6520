"""The gateway over real HTTP: health, readiness against Valkey going away and coming back."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from freqfleet.embedded import EmbeddedValkey
from shared.settings import Environment
from tests.helpers import async_wait_for, free_port, serve
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app


async def test_live_ready_and_data_dir(gateway_settings: GatewaySettings) -> None:
    async with serve(create_app(gateway_settings)) as url, httpx.AsyncClient(base_url=url) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        metrics = await client.get("/metrics")
    assert live.json() == {"status": "ok", "service": "gateway"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok"}
    assert metrics.status_code == 200
    assert gateway_settings.gateway_data_dir.is_dir()
    assert gateway_settings.gateway_data_dir.name == "gw-test"


async def test_ready_follows_redis_down_and_back(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path, free_port())
    valkey.start()
    settings = GatewaySettings(
        env=Environment.test, data_dir=tmp_path, redis_url=SecretStr(valkey.url), gateway_id="gw-redis"
    )
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/health/ready")).status_code == 200
            valkey.stop()
            down = await client.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["checks"]["redis"].startswith("unavailable: ")
            valkey.start()

            async def ready_again() -> bool:
                return (await client.get("/health/ready")).status_code == 200

            await async_wait_for(ready_again, timeout=30, what="readiness after Valkey returned")
    finally:
        valkey.stop()
