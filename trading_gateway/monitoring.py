"""The gateway's gauges of state for ``/metrics`` (see ``shared/metrics.py``): its bots by actual state,
and the pending entries, lag and dead letters of its own command stream."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from shared.bus.streams import commands_stream
from shared.metrics import StateMonitor, bus_families
from trading_gateway.fleet.service import Fleet


def create_monitor(
    registry: CollectorRegistry, redis: aioredis.Redis, fleet: Fleet, interval: float = 5.0
) -> StateMonitor:
    gateway_id = fleet.settings.gateway_id

    async def bus() -> list[Metric]:
        return await bus_families(redis, [commands_stream(gateway_id)], fleet.settings.stream_retention)

    async def bots() -> list[Metric]:
        family = GaugeMetricFamily(
            "freqfleet_gateway_bots", "This gateway's bots by actual state.", labels=["gateway", "state"]
        )
        for state, count in sorted(fleet.bots_by_state().items()):
            family.add_metric([gateway_id, state], float(count))
        return [family]

    return StateMonitor(registry, {"bus": bus, "bots": bots}, interval)
