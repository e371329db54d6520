"""The management server's /metrics beyond HTTP: bus pending, lag and dead letters per stream and group,
bots by state, live gateways, emergency stops; from real Redis and PostgreSQL."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from management_server.users.models import Role
from shared.bus.streams import EVENTS_STREAM
from tests.helpers import async_wait_for
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.bots.test_lifecycle import heartbeat
from tests.management_server.conftest import Management


async def samples(management: Management) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    await management.app.state.metrics_monitor.refresh()
    text = (await management.client.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_bus_bots_and_emergency_stops_are_measured(management: Management, redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin = await session_of(management, "root@example.com", Role.admin)
    strategy = (await upload(management, admin)).json()["id"]
    created = await management.client.post("/api/v1/bots", json=bot_body(strategy), headers=admin)
    assert created.status_code == 201, created.text
    await heartbeat(management)

    # A gateway's command stream: three commands, one taken and not yet acked.
    stream, group = "freqfleet:commands:gw-metrics", "gateway:gw-metrics"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for n in range(3):  # the first two minutes old
        await redis.xadd(stream, {"n": str(n)}, id=f"{int((time.time() - 120) * 1000)}-0" if n == 0 else "*")
    await redis.xreadgroup(group, "c1", {stream: ">"}, count=1)
    # An entry nobody can decode goes to the events' dead-letter stream at once.
    await redis.xadd(EVENTS_STREAM, {"type": "NOPE", "event_id": "x", "envelope": "not json"})
    await async_wait_for(lambda: redis.xlen(EVENTS_STREAM + ":dead"), timeout=15, what="the dead letter")

    found = await samples(management)
    assert value(found, "freqfleet_bus_pending_messages", stream=stream, group=group) == 1
    assert value(found, "freqfleet_bus_lag_messages", stream=stream, group=group) == 2
    assert 120 <= value(found, "freqfleet_bus_oldest_unconsumed_age_seconds", stream=stream, group=group) < 600
    assert value(found, "freqfleet_bus_oldest_unconsumed_age_seconds", stream=EVENTS_STREAM, group="management") == 0
    assert value(found, "freqfleet_bus_max_age_seconds", stream=stream) == 3600
    assert value(found, "freqfleet_bus_max_age_seconds", stream=EVENTS_STREAM) == 6 * 3600
    assert value(found, "freqfleet_bus_pending_messages", stream=EVENTS_STREAM, group="management") == 0
    assert value(found, "freqfleet_bus_dead_letters", stream=EVENTS_STREAM) == 1
    assert value(found, "freqfleet_bots", state="stopped") == 1
    assert value(found, "freqfleet_bots", state="running") == 0  # every state is there, zeros included
    assert value(found, "freqfleet_gateways_live") == 1
    assert value(found, "freqfleet_metrics_refreshed_timestamp_seconds")

    before = value(found, "freqfleet_emergency_stops_total", via="api") or 0.0
    stopped = await management.client.post("/api/v1/emergency-stop", json={"scope": "mine"}, headers=admin)
    assert stopped.status_code == 200, stopped.text
    found = await samples(management)
    assert value(found, "freqfleet_emergency_stops_total", via="api") == before + 1
    assert value(found, "freqfleet_bots", state="halted") == 1
    await redis.aclose()
