"""Prometheus metrics of Freqfleet beyond HTTP (which ``shared/http.py`` instruments).

Two kinds:

- **Counters and histograms of events** (a risk breach, a bot restarted, an emergency stop, a model
  deployed, a training's duration, a backup) live in one process-wide registry here, incremented by
  whoever causes the event: import the metric and call ``.labels(...).inc()`` / ``.observe()``. Every
  app's ``/metrics`` shows them (:func:`install`), as the default registry would, while apps keep a
  registry of their own (several apps can live in one test process). What the Celery worker's tasks
  count is served by the worker itself (``management_server/worker_metrics.py``).
- **Gauges of state** (bus pending and lag, dead letters, bots by state) are read from Redis or the
  database by a task of the app every ``interval`` seconds (:class:`StateMonitor`) and served from
  that snapshot, so a scrape never waits on a dependency; ``freqfleet_metrics_refreshed_timestamp_seconds``
  says how fresh they are.

Names (also what ``deploy/prometheus/alerts.yml`` refers to):

=========================================== ========= ==================================================
``freqfleet_bus_pending_messages``          gauge     entries delivered to a group and not acked (stream, group)
``freqfleet_bus_lag_messages``              gauge     entries not yet delivered to a group (stream, group)
``freqfleet_bus_dead_letters``              gauge     entries in a dead-letter stream (stream: the source)
``freqfleet_bots``                          gauge     management: bots by actual state (state)
``freqfleet_gateway_bots``                  gauge     gateway: its bots by actual state (gateway, state)
``freqfleet_gateways_live``                 gauge     management: gateways heard from within 15 s
``freqfleet_bot_restarts_total``            counter   gateway: bots restarted (reason: crash, requested)
``freqfleet_bot_failures_total``            counter   gateway: bots failed after a crash loop
``freqfleet_emergency_stops_total``         counter   emergency stops (via: api, bus, local)
``freqfleet_risk_breaches_total``           counter   management: bots paused by the risk guard (scope: bot, user)
``freqfleet_model_deploys_total``           counter   model deployments (outcome: sent, loaded, rejected)
``freqfleet_model_training_seconds``        histogram duration of a model training (outcome: succeeded, failed)
``freqfleet_backups_total``                 counter   backups made (outcome: succeeded, failed)
``freqfleet_commands_refused_total``        counter   gateway: commands refused by their signature (reason)
``freqfleet_events_refused_total``          counter   management: events not from an enrolled gateway (reason)
``freqfleet_keysets_refused_total``         counter   gateway: key sets its pinned keys do not endorse
=========================================== ========= ==================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.bus.backlog import backlogs
from shared.bus.streams import DEAD_LETTER_SUFFIX, Retention, entry_time
from shared.logging import get_logger

log = get_logger(__name__)

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

RISK_BREACHES = Counter(
    "freqfleet_risk_breaches_total",
    "Bots paused by the risk guard because a drawdown limit was reached.",
    ["scope"],
    registry=PROCESS_REGISTRY,
)
BOT_RESTARTS = Counter(
    "freqfleet_bot_restarts_total",
    "Bots restarted by their gateway (reason: crash = after a crash or a hang, requested = RESTART_BOT or a new spec).",
    ["reason"],
    registry=PROCESS_REGISTRY,
)
BOT_FAILURES = Counter(
    "freqfleet_bot_failures_total",
    "Bots marked failed by their gateway (crash loop, or a spec that can't run).",
    registry=PROCESS_REGISTRY,
)
EMERGENCY_STOPS = Counter(
    "freqfleet_emergency_stops_total",
    "Emergency stops (via: api = the management API, bus = EMERGENCY_STOP run by a gateway, local = the gateway's "
    "own kill switch).",
    ["via"],
    registry=PROCESS_REGISTRY,
)
MODEL_DEPLOYS = Counter(
    "freqfleet_model_deploys_total",
    "FreqAI model deployments (outcome: sent = UPDATE_MODEL published, loaded = MODEL_LOADED, rejected = "
    "MODEL_REJECTED).",
    ["outcome"],
    registry=PROCESS_REGISTRY,
)
BACKUPS = Counter(
    "freqfleet_backups_total",
    "Backups made (outcome: succeeded, failed), by `freqfleet backup` or the scheduled task.",
    ["outcome"],
    registry=PROCESS_REGISTRY,
)
COMMANDS_REFUSED = Counter(
    "freqfleet_commands_refused_total",
    "Bus commands a gateway refused and dead-lettered (reason: missing, bad, unknown_key, stale or replayed "
    "signature).",
    ["reason"],
    registry=PROCESS_REGISTRY,
)
KEYSETS_REFUSED = Counter(
    "freqfleet_keysets_refused_total",
    "Key sets fetched from the management server that a gateway refused: different from its pinned keys and "
    "endorsed by none of them (the gateway's log names the URL).",
    registry=PROCESS_REGISTRY,
)
EVENTS_REFUSED = Counter(
    "freqfleet_events_refused_total",
    "Bus events the management server refused and dead-lettered (reason: missing, bad, unknown_key, revoked, "
    "stale or impersonation: not signed by the enrolled gateway they say they come from).",
    ["reason"],
    registry=PROCESS_REGISTRY,
)
for _reason in ("missing", "bad", "unknown_key", "stale", "replayed"):
    COMMANDS_REFUSED.labels(reason=_reason)
for _reason in ("missing", "bad", "unknown_key", "revoked", "stale", "impersonation"):
    EVENTS_REFUSED.labels(reason=_reason)
TRAINING_SECONDS = Histogram(
    "freqfleet_model_training_seconds",
    "Duration of FreqAI model trainings (outcome: succeeded, failed).",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=PROCESS_REGISTRY,
)


class _ProcessMetrics(Collector):
    def collect(self) -> Iterable[Metric]:
        return PROCESS_REGISTRY.collect()


def install(registry: CollectorRegistry) -> None:
    """Serve the process-wide counters and histograms from this app's registry too."""
    registry.register(_ProcessMetrics())


# ----------------------------------------------------------------------------------------- gauges of state


@dataclass(eq=False)
class Snapshot(Collector):
    """Gauge families made by the last refresh; what a scrape returns."""

    families: list[Metric] = field(default_factory=list)

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


Source = Callable[[], Awaitable[list[Metric]]]


class StateMonitor:
    """Refreshes a :class:`Snapshot` from ``sources`` every ``interval`` seconds (and at start)."""

    def __init__(self, registry: CollectorRegistry, sources: Mapping[str, Source], interval: float = 5.0) -> None:
        self.snapshot = Snapshot()
        registry.register(self.snapshot)
        self.sources = dict(sources)
        self.interval = interval
        self._previous: dict[str, list[Metric]] = {}
        self._failing: set[str] = set()
        self._fresh_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        families: list[Metric] = []
        for name, source in self.sources.items():
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as
                # the source answers, and stop() would then wait on a loop that goes on.
                async with asyncio.timeout(max(1.0, self.interval)):
                    self._previous[name] = await source()
                self._failing.discard(name)
            except Exception as exc:  # keep the last good figures of this source; the others still refresh
                # Once per outage at warning level (every 5 s would flood the log while Redis is away).
                level = log.debug if name in self._failing else log.warning
                level("metrics source failed", source=name, error=f"{type(exc).__name__}: {exc}")
                self._failing.add(name)
            families += self._previous.get(name, [])
        if not self._failing:
            self._fresh_at = time.time()
        fresh = GaugeMetricFamily(
            "freqfleet_metrics_refreshed_timestamp_seconds",
            "When every state gauge was last read successfully (Unix time); older while a source fails.",
        )
        fresh.add_metric([], self._fresh_at)
        self.snapshot.families = [*families, fresh]

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def bus_families(
    redis: aioredis.Redis, streams: Iterable[str] | None = None, retention: Retention | None = None
) -> list[Metric]:
    """Pending, lag and the age of the oldest unconsumed entry of every consumer group of ``streams`` (None: every
    ``freqfleet:`` stream), each stream's age limit, and the size of their dead-letter streams."""
    retention = retention or Retention()
    if streams is None:
        found = [_text(s) async for s in redis.scan_iter(match="freqfleet:*", _type="stream", count=500)]
        names = sorted(s for s in found if not s.endswith(DEAD_LETTER_SUFFIX))
        dead = sorted(s for s in found if s.endswith(DEAD_LETTER_SUFFIX))
    else:
        names = sorted(streams)
        dead = [s + DEAD_LETTER_SUFFIX for s in names]
    pending = GaugeMetricFamily(
        "freqfleet_bus_pending_messages",
        "Entries delivered to a consumer group and not acknowledged yet.",
        labels=["stream", "group"],
    )
    lag = GaugeMetricFamily(
        "freqfleet_bus_lag_messages",
        "Entries of a stream not yet delivered to a consumer group.",
        labels=["stream", "group"],
    )
    oldest = GaugeMetricFamily(
        "freqfleet_bus_oldest_unconsumed_age_seconds",
        "Age of the oldest entry a consumer group has not consumed (0 when it has consumed everything).",
        labels=["stream", "group"],
    )
    max_age = GaugeMetricFamily(
        "freqfleet_bus_max_age_seconds",
        "Age past which a stream's entries are trimmed, consumed or not (FREQFLEET_EVENTS_MAX_AGE, "
        "FREQFLEET_COMMAND_MAX_AGE).",
        labels=["stream"],
    )
    letters = GaugeMetricFamily(
        "freqfleet_bus_dead_letters", "Entries in the dead-letter stream of a stream.", labels=["stream"]
    )
    now = time.time()
    for name in names:
        if (limit := retention.max_age(name)) is not None:
            max_age.add_metric([name], limit)
        try:
            groups = await backlogs(redis, name)
        except aioredis.ResponseError:
            continue  # the stream vanished or changed type between SCAN and XINFO
        for group in groups:
            labels = [name, group.group]
            pending.add_metric(labels, float(group.pending))
            if group.lag is not None:
                lag.add_metric(labels, float(group.lag))
            age = 0.0 if group.oldest_unconsumed is None else max(0.0, now - entry_time(group.oldest_unconsumed))
            oldest.add_metric(labels, age)
    pipe = redis.pipeline(transaction=False)
    for name in dead:
        pipe.exists(name)
        pipe.xlen(name)
    answers = await pipe.execute(raise_on_error=False)
    for index, name in enumerate(dead):
        exists, size = answers[2 * index], answers[2 * index + 1]
        if not isinstance(size, Exception):
            letters.add_metric([name.removesuffix(DEAD_LETTER_SUFFIX)], float(size if exists else 0))
    return [pending, lag, oldest, max_age, letters]


def state_family(name: str, documentation: str, counts: Mapping[str, int], states: Iterable[str]) -> GaugeMetricFamily:
    """A gauge by ``state`` with every known state present (zeros included), so alerts see a 0, not nothing."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in sorted(set(states) | set(counts)):
        family.add_metric([state], float(counts.get(state, 0)))
    return family
