"""The management server's gauges of state for ``/metrics`` (see ``shared/metrics.py``).

Every few seconds: pending and lag of every consumer group of every Freqfleet stream and the size
of every dead-letter stream (from Redis), bots by actual state and the gateways heard from
recently (from the database).
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.bots.models import ActualState, Bot
from management_server.gateways.models import Gateway
from management_server.gateways.service import LIVE_WINDOW
from shared.bus.streams import Retention
from shared.metrics import StateMonitor, bus_families, state_family


def create_monitor(
    registry: CollectorRegistry,
    redis: aioredis.Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    interval: float = 5.0,
    retention: Retention | None = None,
) -> StateMonitor:
    async def bus() -> list[Metric]:
        return await bus_families(redis, retention=retention)

    async def bots() -> list[Metric]:
        async with sessionmaker() as session:
            query = select(Bot.actual_state, func.count()).group_by(Bot.actual_state)
            counts = dict((await session.execute(query)).all())
            live = await session.scalar(
                select(func.count()).select_from(Gateway).where(Gateway.last_seen_at >= datetime.now(UTC) - LIVE_WINDOW)
            )
        gateways = GaugeMetricFamily("freqfleet_gateways_live", "Gateways heard from within the last 15 seconds.")
        gateways.add_metric([], float(live or 0))
        states = [s.value for s in ActualState]
        by_state = state_family("freqfleet_bots", "Bots by actual state, as gateways report them.", counts, states)
        return [by_state, gateways]

    return StateMonitor(registry, {"bus": bus, "bots": bots}, interval)
