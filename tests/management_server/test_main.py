"""management_server/main.py's lifespan: everything it starts is stopped, in the reverse order of its making (the
reconciler first, the database engine last)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from management_server.analytics.trades import TradeSync
from management_server.bots.markets import Markets
from management_server.bots.reconcile import Reconciler
from management_server.bus.relay import OutboxRelay
from management_server.config import ManagementSettings
from management_server.elected import Elected
from management_server.freqai.tasks import TrainQueue
from management_server.gateways.client import GatewayClient
from management_server.main import create_app
from management_server.strategies.tasks import CheckQueue
from shared.metrics import StateMonitor

STOPS: dict[str, tuple[type, str]] = {
    "reconciler": (Reconciler, "stop"),
    "train queue": (TrainQueue, "close"),
    "check queue": (CheckQueue, "close"),
    "event consumer": (Elected, "stop"),
    "trade sync": (TradeSync, "stop"),
    "metrics monitor": (StateMonitor, "stop"),
    "gateway client": (GatewayClient, "aclose"),
    "markets": (Markets, "aclose"),
    "outbox relay": (OutboxRelay, "stop"),
    "redis": (aioredis.Redis, "aclose"),
    "engine": (AsyncEngine, "dispose"),
}


def _recording(name: str, original: Callable[..., Any], stopped: list[tuple[str, object]]) -> Callable[..., Any]:
    if name.endswith("queue"):  # closed synchronously

        def close(self: object, *args: Any, **kwargs: Any) -> Any:
            stopped.append((name, self))
            return original(self, *args, **kwargs)

        return close

    async def stop(self: object, *args: Any, **kwargs: Any) -> Any:
        stopped.append((name, self))
        return await original(self, *args, **kwargs)

    return stop


async def test_the_lifespan_stops_what_it_started_in_reverse_order(
    management_settings: ManagementSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[tuple[str, object]] = []
    for name, (cls, method) in STOPS.items():
        monkeypatch.setattr(cls, method, _recording(name, getattr(cls, method), stopped))
    app = create_app(management_settings)
    async with app.router.lifespan_context(app):
        state = app.state
        # Not stopped mid-refresh: on Python 3.11 a cancellation can be lost in the monitor's asyncio.wait_for
        # (the monitor then never ends); that is shared.metrics' business, not the lifespan's.
        for _ in range(200):
            if state.metrics_monitor.snapshot.families:
                break
            await asyncio.sleep(0.05)
        ours = {
            "reconciler": state.reconciler,
            "train queue": state.train_queue,
            "check queue": state.check_queue,
            "event consumer": state.event_consumer,
            "trade sync": state.trade_sync,
            "metrics monitor": state.metrics_monitor,
            "gateway client": state.gateway_client,
            "markets": state.markets,
            "outbox relay": state.outbox_relay,
            "redis": state.redis,
            "engine": state.engine,
        }
    # other clients of these classes (the consumer's own Redis connection, ...) are not the lifespan's to stop
    assert [name for name, obj in stopped if ours[name] is obj] == list(STOPS)
