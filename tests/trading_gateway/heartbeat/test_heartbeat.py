"""GATEWAY_HEARTBEAT from a real gateway on real Valkey: id, capacity, bots by state, host CPU and memory."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import psutil
import redis.asyncio as aioredis

from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData, decode
from shared.bus.streams import EVENTS_STREAM
from tests.helpers import async_wait_for, serve
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import Actual
from trading_gateway.main import create_app


async def _beats(redis: aioredis.Redis) -> list[GatewayHeartbeat]:
    entries = await redis.xrange(EVENTS_STREAM)
    return [m for _, f in entries if isinstance(m := decode(f[b"envelope"]), GatewayHeartbeat)]


async def test_heartbeats_carry_capacity_bots_by_state_and_host_load(gateway_settings: GatewaySettings) -> None:
    settings = gateway_settings.model_copy(update={"heartbeat_interval": 0.2, "max_bots": 7})
    redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        async with serve(create_app(settings)):

            async def two() -> list[GatewayHeartbeat]:
                beats = await _beats(redis)
                return beats if len(beats) >= 2 else []

            beats = await async_wait_for(two, timeout=10, what="two heartbeats")
    finally:
        await redis.aclose()
    total = psutil.virtual_memory().total
    for beat in beats:
        data = beat.data
        assert beat.source == "gateway:gw-test"
        assert (data.gateway_id, data.host, data.bots_running, data.capacity) == ("gw-test", socket.gethostname(), 0, 7)
        # Every actual state is counted, zeros included: a dashboard sees the same keys from every gateway.
        assert data.bots_by_state == {state.value: 0 for state in Actual}
        assert data.cpu_percent is not None
        assert 0.0 <= data.cpu_percent <= 100.0
        assert data.cpu_count == psutil.cpu_count()
        assert data.memory_total_bytes == total
        assert data.memory_used_bytes is not None
        assert 0 < data.memory_used_bytes < total
        assert data.memory_percent == round(100 * data.memory_used_bytes / total, 1)
    assert beats[1].occurred_at > beats[0].occurred_at


def test_a_heartbeat_without_the_load_fields_still_decodes() -> None:
    """A gateway of the previous version sends no bots_by_state, CPU or memory: its heartbeats still count."""
    old = {
        "event_id": "6f1c1f3e-0f7a-4c8e-9d52-7a8f3e1d2c4b",
        "type": "GATEWAY_HEARTBEAT",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "gateway:gw-old",
        "data": {
            "gateway_id": "gw-old",
            "host": "h",
            "version": "0.1.0",
            "started_at": datetime.now(UTC).isoformat(),
            "bots_running": 2,
            "capacity": 3,
        },
    }
    beat = decode(json.dumps(old).encode())
    assert isinstance(beat, GatewayHeartbeat)
    assert beat.data == GatewayHeartbeatData.model_validate(old["data"])
    assert (beat.data.bots_running, beat.data.bots_by_state, beat.data.cpu_percent, beat.data.memory_percent) == (
        2,
        {},
        None,
        None,
    )
