"""The gateway's /metrics beyond HTTP: its bots by state, its command stream's pending entries, lag and dead
letters, local emergency stops (restarts and failures are counted in test_restarts, with real crashes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared.bus.messages import CommandAccepted
from shared.bus.streams import commands_stream, gateway_group
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import Bus, Gateway, Tokens, bearer, running_gateway, settings_for, stop
from trading_gateway.config import GatewaySettings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def samples(gateway: Gateway) -> Samples:
    await gateway.app.state.metrics_monitor.refresh()
    text = (await gateway.http.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_bots_by_state_the_command_stream_and_local_emergency_stops(
    simulator: SimulatorProcess,
    tokens: Tokens,
    redis_url: str,
    tmp_path: Path,
    cleanup: list[GatewaySettings],
    bus_factory: Callable[[str], Bus],
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    bus = bus_factory(settings.gateway_id)
    stream, group = commands_stream(settings.gateway_id), gateway_group(settings.gateway_id)
    async with running_gateway(settings) as gw:
        before = await samples(gw)
        for state in ("running", "paused", "failed", "halted", "stopped"):  # every state, zeros included
            assert (
                ("freqfleet_gateway_bots", frozenset({("gateway", settings.gateway_id), ("state", state)}))
            ) in before
        assert isinstance(await bus.answer(await bus.send(stop(uuid.uuid4(), 1))), CommandAccepted)
        await bus.redis.xadd(stream, {"type": "NOPE", "event_id": "x", "envelope": "not json"})
        await async_wait_for(lambda: bus.redis.xlen(stream + ":dead"), timeout=15, what="the dead letter")
        found = await samples(gw)
        assert value(found, "freqfleet_bus_pending_messages", stream=stream, group=group) == 0
        assert value(found, "freqfleet_bus_lag_messages", stream=stream, group=group) == 0
        assert value(found, "freqfleet_bus_dead_letters", stream=stream) == 1

        halted = await gw.http.post(
            "/api/v1/emergency-stop", json={"scope": "all"}, headers=bearer(tokens.mint("admin"))
        )
        assert halted.status_code == 200, halted.text
        after = await samples(gw)
        local = ("freqfleet_emergency_stops_total", {"via": "local"})
        assert value(after, local[0], **local[1]) == value(before, local[0], **local[1]) + 1
