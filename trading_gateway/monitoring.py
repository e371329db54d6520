"""The gateway's gauges of state for ``/metrics`` (see ``shared/metrics.py``): its bots by actual state,
the pending entries, lag and dead letters of its own command stream, and its market-data relay's numbers (per
exchange and per bot, as the relay last reported them)."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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

    async def relay() -> list[Metric]:
        stats = None if fleet.relay is None else fleet.relay.last_stats
        if stats is None:
            return []
        used = GaugeMetricFamily(
            "freqfleet_gateway_relay_used_weight_1m", "The IP's request weight this minute.", labels=["exchange"]
        )
        blocked = GaugeMetricFamily(
            "freqfleet_gateway_relay_blocked_seconds",
            "Seconds the relay still sends nothing upstream (a 429's Retry-After, a 418 ban).",
            labels=["exchange"],
        )
        upstream = CounterMetricFamily(
            "freqfleet_gateway_relay_upstream_requests", "Requests the relay sent upstream.", labels=["exchange"]
        )
        for name, numbers in sorted(stats.get("exchanges", {}).items()):
            used.add_metric([name], float(numbers.get("used_weight_1m", 0)))
            blocked.add_metric([name], float(numbers.get("blocked_for_seconds", 0)))
            upstream.add_metric([name], float(numbers.get("upstream_requests", 0)))
        requests = CounterMetricFamily(
            "freqfleet_gateway_relay_requests",
            "Bots' market-data requests by how the relay answered them.",
            labels=["bot_id", "outcome"],
        )
        weight = CounterMetricFamily(
            "freqfleet_gateway_relay_weight", "Request weight sent upstream for each bot.", labels=["bot_id"]
        )
        wait = CounterMetricFamily(
            "freqfleet_gateway_relay_queue_wait_seconds", "Seconds each bot's requests waited.", labels=["bot_id"]
        )
        for bot_id, numbers in sorted(stats.get("bots", {}).items()):
            for outcome in ("hits", "misses", "coalesced", "private", "refused", "errors"):
                requests.add_metric([bot_id, outcome], float(numbers.get(outcome, 0)))
            weight.add_metric([bot_id], float(numbers.get("weight", 0)))
            wait.add_metric([bot_id], float(numbers.get("queue_wait_seconds", 0)))
        return [used, blocked, upstream, requests, weight, wait]

    return StateMonitor(registry, {"bus": bus, "bots": bots, "relay": relay}, interval)
