"""The fleet: this gateway's bots, their desired and actual state, and one supervisor task per bot.

Desired state comes from commands (the bus) and lives in the state file (``BotRecord.desired`` and
``generation``), with each bot's spec beside its files; actual state is what the supervisor sees.
Each bot's supervisor task is the only code that starts, stops or restarts its process, and it
reconciles on every command (commands wake it) and on a timer (``status_interval`` while the bot
runs, :data:`IDLE_RECONCILE` otherwise): a bot meant to run is launched, one meant to stop is
stopped, and a running bot is polled (status, trades, liveness, Freqtrade's state put back to
running or paused when it drifted).

Decisions:

- **Commands record intent, supervisors act.** A command handler validates (spec rendered in full,
  capacity, a port free), writes the new desired state and generation (and the spec) to disk and
  returns, so the entry is acked after its intent is durable and one slow bot start never holds up
  the command stream. A gateway that dies after the ack finds the intent on disk at its next start,
  a restart asked for (RESTART_BOT, a new spec for a running bot) included: ``restart_pending`` in
  the bot's record, cleared once its process is gone, makes the next gateway restart the process it
  adopts.
  FORCE_EXIT and UPDATE_CONFIG act on the running bot directly (REST, under the bot's lock).
- **Crashes and the restart policy.** A process that ends without being asked to, a bot whose API
  stays silent for ``bot_unresponsive_timeout`` or whose trading loop has not run for
  ``bot_stall_timeout`` (``/health``), and a start that fails all count as crashes (crash times are
  kept in the state file, so a gateway restart doesn't reset the count). The next start waits
  ``bot_restart_backoff_initial`` doubling to ``bot_restart_backoff_max`` seconds, jittered (half to
  all of it); the doubling starts over after ``bot_restart_backoff_reset`` seconds of good health.
  More than ``bot_crash_loop_max`` crashes within ``bot_crash_loop_window`` make the bot **failed**
  (BOT_FAILED with its last log lines): it stays down until a new START or RESTART. A crash is
  reported as BOT_STOPPED with the reason and the delay before the next try.
- **Emergency stop** first records ``halted`` for every targeted bot (so nothing restarts them; one
  write of the state file for all), takes the bots from their supervisors (a start in progress is
  cancelled and its process ended; until the stop is over no watchdog or wake-up gives a bot a new
  supervisor, which would stop the same process a second time and report its trades twice),
  then runs ``stopentry → forceexit all → stop → terminate`` on all of them at once
  (:func:`~trading_gateway.bots.emergency.emergency_stop_all`). Only a newer START leaves ``halted``.
  It works without Redis: EMERGENCY_STOP_COMPLETED waits in the outbox.
- **Adoption.** At start the fleet adopts the processes of the state file
  (:func:`~trading_gateway.bots.adoption.adopt`) without restarting them, re-announces them with
  BOT_STARTED under a deterministic id (a duplicate if the management server saw it, the news if
  it didn't), ends the ones that don't answer, and restarts the dead ones meant to run.
- **Shutdown** leaves the bots running for the next gateway unless ``stop_bots_on_shutdown`` (what
  ``freqfleet up`` sets): then they are stopped, their desired state kept, so the next start brings
  back the ones meant to run.
- Events a supervisor publishes carry the correlation id of the command that caused them; the tasks
  run in a context of their own, so no request's id sticks to a bot's later events.
- Nothing here logs or reports a secret: log lines sent in BOT_FAILED are scrubbed of the bot's API
  and exchange secrets, and views (:meth:`Fleet.views`) have no credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from shared.bus.messages import (
    BotFailed,
    BotFailedData,
    BotSpec,
    BotStarted,
    BotStartedData,
    BotStatus,
    BotStatusData,
    BotStopped,
    BotStoppedData,
    EmergencyOutcome,
    EmergencyStopCompleted,
    EmergencyStopCompletedData,
    Envelope,
    InventoryEntry,
)
from shared.files import atomic_write, open_read_nofollow
from shared.logging import get_logger
from shared.metrics import BOT_FAILURES, BOT_RESTARTS, EMERGENCY_STOPS
from shared.sandbox.host import detect
from trading_gateway.bots import BOTS_DIR, STATE_FILE
from trading_gateway.bots.adoption import AdoptionReport, adopt
from trading_gateway.bots.client import BotApiError, FreqtradeClient
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.emergency import EmergencyResult, FleetEmergencyResult, emergency_stop_all
from trading_gateway.bots.files import BotConfigError, BotFiles, render_config
from trading_gateway.bots.launch import launch_bot
from trading_gateway.bots.ports import NoFreePort, PortPool
from trading_gateway.bots.process import BotProcess, BotStartError
from trading_gateway.bots.sandbox import BotSandboxing
from trading_gateway.bots.state import BotRecord, Desired, StateFile
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.trades import TradeReporter, closed_trades_from_api, closed_trades_from_db
from trading_gateway.freqai.installs import MODELS_FILE
from trading_gateway.freqai.service import ModelDelivery, ModelService
from trading_gateway.identity import GatewayIdentity, load_or_create

log = get_logger(__name__)

SPEC_FILE = "spec.json"
SUPERVISION_FILE = "supervision.json"
IDLE_RECONCILE = 10.0  # seconds between reconciles of a bot that has no process
WATCHDOG_INTERVAL = 10.0  # seconds between checks that every bot has a live supervisor
API_TIMEOUT = 5.0  # seconds per REST call of a status poll
SHUTDOWN_GRACE = 5.0  # longest grace at shutdown (`freqfleet up` kills the gateway 10 s after SIGTERM)
LOG_LINES = 50
BOT_EVENTS = uuid.UUID("0b7e6f0e-3c1a-4f53-8a11-5d2c7f9a4e20")  # namespace of deterministic lifecycle event ids
RUNNING_STATES = (Desired.running, Desired.paused)


class Actual(StrEnum):
    stopped = "stopped"
    starting = "starting"  # being started, or waiting to be restarted after a crash
    running = "running"
    paused = "paused"
    stopping = "stopping"
    failed = "failed"  # crash loop, or a spec that can't run: down until a new START
    halted = "halted"  # emergency-stopped: down until a new START


class CommandRefused(Exception):
    """A command that can't be applied; the message says why, in words a person can act on."""


@dataclass(eq=False)
class ManagedBot:
    """One bot as the fleet sees it (the supervisor task mutates the process side)."""

    uuid: uuid.UUID
    files: BotFiles
    desired: Desired
    generation: int
    spec: BotSpec | None
    reporter: TradeReporter
    process: BotProcess | None = None
    api: FreqtradeClient | None = None
    actual: Actual = Actual.stopped
    failed_reason: str | None = None
    last_error: str | None = None
    freqtrade_version: str | None = None
    freqtrade_state: str | None = None
    last_status_at: datetime | None = None
    open_trades: int = 0
    restart_requested: bool = False
    stop_reason: str | None = None
    kill_reason: str | None = None  # end the process and count a crash (hung, or not answering at adoption)
    launching: bool = False
    attempt: int = 0  # restarts since the last good health, for the backoff
    next_start_at: float = 0.0  # monotonic time before which no restart happens
    healthy_since: float | None = None
    unanswered_since: float | None = None
    correlation_id: str | None = None
    in_emergency: bool = False  # being emergency-stopped: no supervisor may be (re)started for it meanwhile
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    @property
    def bot_id(self) -> str:
        return str(self.uuid)


@dataclass(frozen=True)
class BotView:
    """What ``GET /api/v1/bots`` shows of a bot (never a credential)."""

    bot_id: uuid.UUID
    generation: int
    desired: str
    actual: str
    freqtrade_state: str | None
    pid: int | None
    port: int | None
    started_at: datetime | None
    freqtrade_version: str | None
    last_status_at: datetime | None
    last_status_age_seconds: float | None
    open_trades: int
    crash_count: int
    last_error: str | None


def _lifecycle_id(bot: ManagedBot, kind: str, process: BotProcess) -> uuid.UUID:
    """The same id for the same news about the same process (a re-announced start is a duplicate)."""
    return uuid.uuid5(BOT_EVENTS, f"{bot.bot_id}:{kind}:{process.pid}:{process.create_time:.2f}")


def describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "its process ended (exit code unknown: it was not started by this gateway process)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"its process was killed by {name}"
    return f"its process exited with code {exit_code}"


def describe_error(exc: BaseException) -> str:
    """An error in words, without the input values pydantic puts in its messages (they may be secrets)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
    return str(exc)


def storable(spec: BotSpec) -> BotSpec:
    """The spec as the gateway keeps it: a dry-run bot's exchange keys are dropped (never on disk)."""
    return spec.model_copy(update={"credentials": None}) if spec.dry_run and spec.credentials is not None else spec


class Fleet:
    def __init__(
        self,
        settings: GatewaySettings,
        events: EventPublisher,
        *,
        executable: Path | None = None,
        models: ModelService | None = None,
        identity: GatewayIdentity | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        # Opens live bots' sealed exchange credentials (into their 0600 config only).
        self.identity = identity or load_or_create(settings.gateway_data_dir, settings.gateway_id)
        self.executable = executable
        self.source = f"gateway:{settings.gateway_id}"
        self.root = settings.gateway_data_dir
        self.bots_root = self.root / BOTS_DIR
        self.pool = PortPool(settings.bot_port_range_start, settings.bot_port_range_end)
        self.state = StateFile(self.root / STATE_FILE)
        self.bots: dict[str, ManagedBot] = {}
        self.adoption: AdoptionReport | None = None
        self._mutex = asyncio.Lock()  # commands that change intent, and emergency stops, one at a time
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self._reports: set[asyncio.Task[None]] = set()  # emergency reports being published
        self.models = models or ModelService(settings, events)  # FreqAI models: without keys it refuses them
        self.sandboxing: BotSandboxing | None = None  # found out at start (a probe in a child process)

    # ================================================================== lifecycle

    async def start(self, adopt_timeout: float = 10.0) -> AdoptionReport:
        """Adopt what still runs, restart what died and should run, start the supervisors."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # keys, credentials and every bot's records: the gateway's alone
        host = await asyncio.to_thread(
            detect, self.settings.sandbox_uid_base, self.settings.sandbox_limits, self.settings.allow_unsandboxed
        )
        self.sandboxing = BotSandboxing(host, self.root, simulator_url=self.settings.simulator_url)
        report = await adopt(self.state, self.pool, bots_root=self.bots_root, api_timeout=adopt_timeout)
        self.adoption = report
        for record in self.state.records():
            try:
                bot_uuid = uuid.UUID(record.bot_id)
            except ValueError:
                log.warning("state file names a bot that is not a bus bot id; ignored", bot_id=record.bot_id)
                continue
            files = BotFiles(self.bots_root, record.bot_id)
            files.move_to_meta((SPEC_FILE, SUPERVISION_FILE, MODELS_FILE))
            bot = self._new_bot(bot_uuid, record.desired, record.generation, files)
            bot.spec = self._load_spec(bot)
            bot.failed_reason = self._load_failed(bot)
            bot.last_error = record.last_error
            bot.actual = self._idle_actual(bot)
        for adopted in report.adopted:
            if (live := self.bots.get(adopted.record.bot_id)) is None:
                continue
            process = adopted.process
            live.process = process
            live.api = process.client(timeout=API_TIMEOUT)
            live.freqtrade_version = adopted.record.freqtrade_version
            live.freqtrade_state = adopted.state
            live.actual = Actual.paused if adopted.state == "paused" else Actual.running
            live.healthy_since = time.monotonic()
            live.restart_requested = adopted.record.restart_pending  # accepted before the last gateway ended
            await self._publish_started(live, process, adopted.record.freqtrade_version or "unknown")
        for unresponsive in report.unresponsive:
            if (silent := self.bots.get(unresponsive.record.bot_id)) is None:
                continue
            silent.process = unresponsive.process
            silent.api = unresponsive.process.client(timeout=API_TIMEOUT)
            silent.kill_reason = f"it did not answer when this gateway started ({unresponsive.reason})"
        for dead in report.dead:
            gone = self.bots.get(dead.record.bot_id)
            if gone is not None and dead.should_restart and gone.failed_reason is None:
                lines = self._log_tail(gone)
                await self._after_crash(gone, f"found dead when the gateway started: {dead.reason}", None, lines)
        for bot in self.bots.values():
            self._ensure_supervisor(bot)
        self._watchdog = asyncio.create_task(self._watch(), name="fleet-watchdog", context=contextvars.Context())
        log.info(
            "fleet started",
            bots=len(self.bots),
            adopted=len(report.adopted),
            dead=len(report.dead),
            unresponsive=len(report.unresponsive),
            orphans=len(report.orphans),
            seconds=round(report.seconds, 2),
        )
        return report

    async def stop(self, *, stop_bots: bool) -> None:
        """End the supervisors; stop the bots only when ``stop_bots`` (else they run on, to be adopted)."""
        self._stopping = True
        tasks = [t for t in [self._watchdog, *(b.task for b in self.bots.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        live = [b for b in self.bots.values() if b.process is not None]
        if stop_bots:
            grace = min(self.settings.bot_stop_grace, SHUTDOWN_GRACE)
            results = await asyncio.gather(*(self._stop_at_shutdown(b, grace) for b in live), return_exceptions=True)
            for bot, result in zip(live, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("bot not stopped at shutdown", bot_id=bot.bot_id, error=repr(result))
        else:
            for bot in live:
                await self._close_api(bot)
        await self.models.stop()
        if self._reports:  # emergency reports still on their way to Redis or the outbox
            await asyncio.gather(*self._reports, return_exceptions=True)
        log.info("fleet stopped", stopped_bots=stop_bots, bots_with_a_process=len(live))

    async def _stop_at_shutdown(self, bot: ManagedBot, grace: float) -> None:
        process = bot.process
        assert process is not None
        result = await process.stop(grace)
        await self._drop_process(bot)
        self._put(self._record(bot).without_process(exit_code=result.exit_code))
        await self._sweep_trades(bot)
        bot.actual = Actual.stopped
        reason = "the gateway shut down and stopped its bots (stop_bots_on_shutdown); it restarts with the gateway"
        await self._publish(
            BotStopped(
                event_id=_lifecycle_id(bot, "stopped", process),
                source=self.source,
                data=BotStoppedData(
                    bot_id=bot.uuid, generation=bot.generation, exit_code=result.exit_code, reason=reason
                ),
            )
        )

    async def _watch(self) -> None:
        """A supervisor that died of a bug is logged and replaced; idle bots are reconciled on a timer too."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            for bot in list(self.bots.values()):
                task = bot.task
                if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("bot supervisor died; replacing it", bot_id=bot.bot_id, error=repr(task.exception()))
                self._ensure_supervisor(bot)

    # ================================================================== reading

    def bot(self, bot_id: uuid.UUID) -> ManagedBot | None:
        return self.bots.get(str(bot_id))

    def generation_of(self, bot_id: uuid.UUID) -> int | None:
        bot = self.bot(bot_id)
        return None if bot is None else bot.generation

    def bots_running(self) -> int:
        """Bots with a live process."""
        return sum(1 for b in self.bots.values() if b.process is not None and b.process.is_alive())

    def bots_by_state(self) -> dict[str, int]:
        """How many bots are in each actual state (every state, zeros included)."""
        counts = dict.fromkeys((state.value for state in Actual), 0)
        for bot in self.bots.values():
            counts[bot.actual.value] += 1
        return counts

    def inventory(self) -> list[InventoryEntry]:
        """Every bot this gateway has, for the heartbeat: the management server reconciles it with what each bot
        should be doing."""
        return [
            InventoryEntry(bot_id=b.uuid, generation=b.generation, desired=b.desired.value, actual=b.actual.value)
            for b in self.bots.values()
        ]

    def _active(self, exclude: str | None = None) -> int:
        return sum(
            1
            for b in self.bots.values()
            if b.bot_id != exclude and b.desired in RUNNING_STATES and b.failed_reason is None
        )

    def capacity(self) -> int:
        """How many more bots this gateway takes: ``max_bots`` less the bots meant to run, at most its free ports."""
        return max(0, min(self.settings.max_bots - self._active(), self.pool.free_count))

    def crash_count(self, bot: ManagedBot) -> int:
        record = self.state.get(bot.bot_id)
        if record is None:
            return 0
        since = datetime.now(UTC) - timedelta(seconds=self.settings.bot_crash_loop_window)
        return sum(1 for t in record.crash_times if t >= since)

    def views(self) -> list[BotView]:
        now = datetime.now(UTC)
        views = []
        for bot in sorted(self.bots.values(), key=lambda b: b.bot_id):
            process = bot.process
            views.append(
                BotView(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    desired=bot.desired.value,
                    actual=bot.actual.value,
                    freqtrade_state=bot.freqtrade_state,
                    pid=None if process is None else process.pid,
                    port=None if process is None else process.port,
                    started_at=None if process is None else process.started_at,
                    freqtrade_version=bot.freqtrade_version if process is not None else None,
                    last_status_at=bot.last_status_at,
                    last_status_age_seconds=None
                    if bot.last_status_at is None
                    else round((now - bot.last_status_at).total_seconds(), 3),
                    open_trades=bot.open_trades,
                    crash_count=self.crash_count(bot),
                    last_error=bot.failed_reason or bot.last_error,
                )
            )
        return views

    # ================================================================== commands

    async def start_bot(
        self,
        bot_id: uuid.UUID,
        generation: int,
        spec: BotSpec,
        *,
        correlation_id: str | None = None,
        model: ModelDelivery | None = None,
    ) -> None:
        spec = storable(spec)
        async with self._mutex:
            bot = self.bot(bot_id)
            self._check_spec(bot_id, spec)
            idle = bot is None or (bot.process is None and not bot.launching)
            if idle:
                if self._active(exclude=str(bot_id)) >= self.settings.max_bots:
                    raise CommandRefused(
                        f"this gateway already runs its maximum of {self.settings.max_bots} bots (FREQFLEET_MAX_BOTS): "
                        "stop a bot here or start this one on another gateway"
                    )
                self._check_port(str(bot_id))
            if bot is None:
                files = BotFiles(self.bots_root, str(bot_id))
                files.prepare()
                bot = self._new_bot(bot_id, Desired.running, generation, files)
            elif not idle and bot.spec != spec:
                self._request_restart(bot)  # a new spec for a running (or starting) bot: start it again with it
            self._save_spec(bot, spec)
            bot.spec = spec
            installed = None
            if model is not None:  # before the process starts, so it predicts without training
                before = self.models.runtime(bot)
                installed = self.models.install(bot, model, reason="start")
                if not idle and installed is not None and self.models.runtime(bot) != before:
                    self._request_restart(bot)  # another model class or other features: a new process
            if bot.failed_reason is not None or bot.desired is Desired.halted:
                self._clear_failure(bot)
            bot.attempt = 0
            bot.next_start_at = 0.0
            bot.stop_reason = None
            bot.correlation_id = correlation_id
            self._set_intent(bot, Desired.running, generation)
            self._wake(bot)
            if installed is not None:
                self.models.watch(self, bot, installed)

    async def stop_bot(
        self, bot_id: uuid.UUID, generation: int, *, reason: str | None = None, correlation_id: str | None = None
    ) -> bool:
        """False when this gateway does not know the bot (nothing to stop)."""
        async with self._mutex:
            bot = self.bot(bot_id)
            if bot is None:
                return False
            bot.restart_requested = False
            bot.correlation_id = correlation_id
            bot.stop_reason = reason
            self._set_intent(bot, Desired.stopped, generation)
            self._wake(bot)
            return True

    async def pause_bot(
        self, bot_id: uuid.UUID, generation: int, *, paused: bool, correlation_id: str | None = None
    ) -> None:
        async with self._mutex:
            bot = self._known_running(bot_id, "pause" if paused else "resume")
            bot.correlation_id = correlation_id
            self._set_intent(bot, Desired.paused if paused else Desired.running, generation)
            self._wake(bot)

    async def restart_bot(self, bot_id: uuid.UUID, generation: int, *, correlation_id: str | None = None) -> None:
        async with self._mutex:
            bot = self.bot(bot_id)
            if bot is None:
                raise CommandRefused(f"this gateway has no bot {bot_id}: send START_BOT first")
            if bot.desired not in RUNNING_STATES:
                raise CommandRefused(f"bot {bot_id} is {bot.desired.value}: send START_BOT to start it")
            if bot.failed_reason is not None:
                self._clear_failure(bot)
            bot.attempt = 0
            bot.next_start_at = 0.0
            bot.correlation_id = correlation_id
            if bot.process is not None or bot.launching:
                self._request_restart(bot)
            self._set_intent(bot, bot.desired, generation)
            self._wake(bot)

    async def force_exit(self, bot_id: uuid.UUID, trade_id: int | Literal["all"]) -> str:
        """Exit one open trade or all of them now; what the bot answered."""
        bot = self.bot(bot_id)
        if bot is None:
            raise CommandRefused(f"this gateway has no bot {bot_id}")

        def check() -> tuple[BotProcess, FreqtradeClient]:
            process, api = bot.process, bot.api
            running = bot.actual in (Actual.running, Actual.paused)
            if process is None or api is None or not process.is_alive() or not running:
                raise CommandRefused(f"bot {bot_id} is not running ({bot.actual.value}): there is nothing to exit")
            return process, api

        check()  # before the lock: a bot being started holds it for seconds
        async with bot.lock:
            _, api = check()
            try:
                answer = await api.forceexit(trade_id)
            except BotApiError as exc:
                raise CommandRefused(f"bot {bot_id} refused to exit trade {trade_id}: {exc.message}") from None
        self._wake(bot)  # report the exit at once
        return answer

    async def update_config(
        self, bot_id: uuid.UUID, generation: int, spec: BotSpec, *, correlation_id: str | None = None
    ) -> str:
        """Apply a new spec: ``reload_config`` in the same process when it runs; how it was applied."""
        spec = storable(spec)
        async with self._mutex:
            bot = self.bot(bot_id)
            if bot is None:
                raise CommandRefused(f"this gateway has no bot {bot_id}: send START_BOT with the spec")
            self._check_spec(bot_id, spec)
            old = bot.spec
            self._save_spec(bot, spec)
            bot.spec = spec
            bot.correlation_id = correlation_id
            self._set_intent(bot, bot.desired, generation)
            process, api = bot.process, bot.api
            reload = False
            if bot.launching:
                self._request_restart(bot)
                how = "the bot was starting: it starts again with the new config"
            elif process is None or api is None or not process.is_alive():
                how = "stored: the bot is not running; it uses the new config when it starts"
            elif old is None or old.strategy_class != spec.strategy_class:
                # Freqtrade was started with --strategy <class>: a new class needs a new process.
                self._request_restart(bot)
                how = "the strategy class changed: the bot restarts with the new config"
            else:
                reload = True
        if reload and process is not None and api is not None:  # outside the mutex: an emergency never waits for it
            how = await self._reload(bot, process, api, spec)
        self._wake(bot)
        log.info("bot config updated", bot_id=bot.bot_id, generation=generation, how=how)
        return how

    async def _reload(self, bot: ManagedBot, process: BotProcess, api: FreqtradeClient, spec: BotSpec) -> str:
        async with bot.lock:
            if bot.process is not process or not process.is_alive():
                self._request_restart(bot)
                return "the bot's process changed meanwhile: it starts again with the new config"
            config = render_config(
                spec,
                bot.files,
                port=process.port,
                credentials=process.credentials,
                simulator_url=self.settings.simulator_url,
                process_throttle_secs=self.settings.bot_process_throttle_secs,
                initial_state="paused" if bot.desired is Desired.paused else "running",
                freqai_model=self.models.runtime(bot),
                opener=self.identity,
            )
            bot.files.write(config, spec.strategy_source)
            try:
                await api.reload_config()
            except BotApiError as exc:
                log.warning("reload_config failed; restarting the bot instead", bot_id=bot.bot_id, error=str(exc))
                self._request_restart(bot)
                return f"reload_config failed ({exc.message}): the bot restarts with the new config"
        return "applied with reload_config (same process)"

    def _known_running(self, bot_id: uuid.UUID, verb: str) -> ManagedBot:
        bot = self.bot(bot_id)
        if bot is None:
            raise CommandRefused(f"this gateway has no bot {bot_id}: send START_BOT first")
        if bot.desired not in RUNNING_STATES:
            raise CommandRefused(f"bot {bot_id} is {bot.desired.value}, so there is nothing to {verb}: start it first")
        if bot.failed_reason is not None:
            raise CommandRefused(f"bot {bot_id} has failed ({bot.failed_reason}): send START_BOT or RESTART_BOT")
        return bot

    def _check_spec(self, bot_id: uuid.UUID, spec: BotSpec) -> None:
        """Render the whole config once (nothing written): whatever would stop the bot from starting is refused."""
        try:
            render_config(
                spec,
                BotFiles(self.bots_root, str(bot_id)),
                port=self.pool.start,
                credentials=ApiCredentials.generate(),
                simulator_url=self.settings.simulator_url,
                process_throttle_secs=self.settings.bot_process_throttle_secs,
                opener=self.identity,  # credentials sealed to another gateway or bot are refused here
            )
        except (BotConfigError, ValidationError, ValueError) as exc:
            raise CommandRefused(f"the bot's spec can't run: {describe_error(exc)}") from None

    def _check_port(self, bot_id: str) -> None:
        try:
            port = self.pool.acquire(bot_id)
        except NoFreePort as exc:
            raise CommandRefused(str(exc)) from None
        self.pool.release(port)

    # ================================================================== emergency stop

    async def emergency_stop(
        self,
        bot_ids: Sequence[uuid.UUID] | None,
        *,
        command_id: uuid.UUID | None = None,
        generations: Mapping[uuid.UUID, int] | None = None,
        requested_by: str = "unknown",
        reason: str | None = None,
    ) -> EmergencyStopCompletedData:
        """Halt ``bot_ids`` (every bot of this gateway when None) in parallel; publish and return the outcomes."""
        t0 = time.monotonic()
        EMERGENCY_STOPS.labels(via="local" if command_id is None else "bus").inc()
        async with self._mutex:
            wanted = list(self.bots) if bot_ids is None else list(dict.fromkeys(str(b) for b in bot_ids))
            known = [self.bots[b] for b in wanted if b in self.bots]
            unknown = [b for b in wanted if b not in self.bots]
            log.warning(
                "emergency stop", bots=len(wanted), requested_by=requested_by, reason=reason, command_id=command_id
            )
            # 1. Intent first, so that nothing restarts them (one write of the state file for all of them).
            for bot in known:
                bot.restart_requested = False
                bot.kill_reason = None
                bot.desired = Desired.halted
                bot.generation = max(bot.generation, (generations or {}).get(bot.uuid, 0))
            self.state.put_many([self._intent_record(bot) for bot in known])
            for bot in known:  # until the end, nothing (the watchdog, a wake) gives them a supervisor again
                bot.in_emergency = True
            try:
                outcomes, fleet = await self._halt(known, t0)
            finally:
                for bot in known:
                    bot.in_emergency = False
            outcomes += [
                EmergencyOutcome(bot_id=uuid.UUID(b), outcome="not_running", detail="this gateway has no such bot")
                for b in unknown
            ]
            for bot in known:
                self._ensure_supervisor(bot)
            data = EmergencyStopCompletedData(
                command_id=command_id,
                gateway_id=self.settings.gateway_id,
                results=outcomes,
                seconds=round(time.monotonic() - t0, 3),
                seconds_to_all_paused=_rounded(fleet.seconds_to_all_paused),
                seconds_to_all_exited=_rounded(fleet.seconds_to_all_exited),
            )
        # Reported without waiting for Redis: the kill switch answers once its bots are down, even with the bus
        # frozen (the events go to the outbox then, and out when Redis answers again).
        task = asyncio.create_task(self._report_emergency(known, EmergencyStopCompleted(source=self.source, data=data)))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)
        return data

    async def _report_emergency(self, bots: list[ManagedBot], completed: EmergencyStopCompleted) -> None:
        """The trades the emergency stop closed, then its completion (in that order on the bus)."""
        for bot in bots:
            try:
                await self._sweep_trades(bot)
            except Exception:  # one bot's trade file must not keep the completion from being reported
                log.exception("trades of an emergency-stopped bot not reported", bot_id=bot.bot_id)
        await self._publish(completed)

    async def _halt(self, known: list[ManagedBot], t0: float) -> tuple[list[EmergencyOutcome], FleetEmergencyResult]:
        """Steps 2 and 3 of an emergency stop (the caller holds the mutex and has recorded the intent)."""
        # 2. Take the bots from their supervisors (a start in progress ends with its process).
        tasks = [bot.task for bot in known if bot.task is not None and not bot.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # 3. All at once: stopentry, forceexit all, stop, terminate.
        running = [bot for bot in known if bot.process is not None]
        fleet = await emergency_stop_all(
            [bot.process for bot in running if bot.process is not None],
            grace=self.settings.bot_stop_grace,
            started=t0,  # timings count from the request, supervisors' hand-over included
        )
        results: dict[str, EmergencyResult] = {r.bot_id: r for r in fleet.results}
        outcomes: list[EmergencyOutcome] = []
        for bot in known:
            result = results.get(bot.bot_id)
            process = bot.process
            if result is None:
                result = EmergencyResult(bot.bot_id, "not_running", detail=f"it had no process ({bot.actual})")
            if process is not None and result.outcome != "failed":
                await self._drop_process(bot)
                self._put(self._record(bot).without_process(exit_code=process.exit_code))
            if result.outcome == "failed":
                bot.last_error = f"emergency stop failed: {result.detail}"
            else:
                self._clear_failure(bot)
                bot.actual = Actual.halted
            outcomes.append(result.to_message())
        return outcomes, fleet

    # ================================================================== supervision

    def _new_bot(self, bot_id: uuid.UUID, desired: Desired, generation: int, files: BotFiles) -> ManagedBot:
        reporter = TradeReporter(bot_id, files.folder, self.source, self._publish)
        bot = ManagedBot(uuid=bot_id, files=files, desired=desired, generation=generation, spec=None, reporter=reporter)
        self.bots[bot.bot_id] = bot
        return bot

    def _wake(self, bot: ManagedBot) -> None:
        self._ensure_supervisor(bot)
        bot.wake.set()

    def _ensure_supervisor(self, bot: ManagedBot) -> None:
        if self._stopping or bot.in_emergency:
            return
        if bot.task is None or bot.task.done():
            # A context of its own: the correlation id of the request that created it must not stick.
            bot.task = asyncio.create_task(
                self._supervise(bot), name=f"bot-supervisor:{bot.bot_id}", context=contextvars.Context()
            )

    async def _supervise(self, bot: ManagedBot) -> None:
        structlog.contextvars.bind_contextvars(bot_id=bot.bot_id)
        while not self._stopping:
            bot.wake.clear()
            try:
                await self._step(bot)
            except Exception as exc:
                log.exception("bot supervision step failed")
                bot.last_error = f"internal error: {type(exc).__name__}: {describe_error(exc)}"[:2000]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.wake.wait(), self._pause(bot))

    def _pause(self, bot: ManagedBot) -> float:
        if bot.process is not None:
            return self.settings.status_interval
        if bot.desired in RUNNING_STATES and bot.failed_reason is None:
            return max(0.0, min(IDLE_RECONCILE, bot.next_start_at - time.monotonic()))
        return IDLE_RECONCILE

    def _idle_actual(self, bot: ManagedBot) -> Actual:
        if bot.desired is Desired.halted:
            return Actual.halted
        if bot.failed_reason is not None:
            return Actual.failed
        if bot.desired in RUNNING_STATES:
            return Actual.starting
        return Actual.stopped

    async def _step(self, bot: ManagedBot) -> None:
        """One move of the bot's actual state toward its desired state."""
        structlog.contextvars.unbind_contextvars("correlation_id")  # bound again by a start or stop (_caused_by)
        process = bot.process
        if process is not None and not process.is_alive():
            await self._on_exit(bot, process)
            return
        if bot.desired not in RUNNING_STATES:
            if process is not None:
                await self._stop(bot, process, bot.stop_reason or f"its desired state is {bot.desired.value}")
            else:
                self.pool.release_bot(bot.bot_id)
                bot.actual = self._idle_actual(bot)
            return
        if bot.failed_reason is not None:
            if process is not None:
                await self._stop(bot, process, f"it failed: {bot.failed_reason}")
            bot.actual = Actual.failed
            return
        if process is None:
            if time.monotonic() >= bot.next_start_at:
                await self._launch(bot)
            else:
                bot.actual = Actual.starting
            return
        if bot.kill_reason is not None:
            reason, bot.kill_reason = bot.kill_reason, None
            await self._kill_as_crash(bot, process, reason)
            return
        if bot.restart_requested:
            bot.restart_requested = False
            BOT_RESTARTS.labels(reason="requested").inc()
            await self._stop(bot, process, "restart requested")
            if bot.desired in RUNNING_STATES and bot.failed_reason is None:
                await self._launch(bot)
            return
        await self._poll(bot, process)

    async def _launch(self, bot: ManagedBot) -> None:
        _caused_by(bot)
        spec = bot.spec
        if spec is None:
            await self._fail(bot, "this gateway does not have the bot's spec: send START_BOT again", [])
            return
        bot.actual = Actual.starting
        bot.launching = True
        bot.restart_requested = False  # this start uses the newest spec; a RESTART from now on asks for another
        try:
            async with bot.lock:
                launched = await launch_bot(
                    spec,
                    bot.files,
                    self.pool,
                    simulator_url=self.settings.simulator_url,
                    start_timeout=self.settings.bot_start_timeout,
                    process_throttle_secs=self.settings.bot_process_throttle_secs,
                    initial_state="paused" if bot.desired is Desired.paused else "running",
                    freqai_model=self.models.runtime(bot),
                    state=self.state,
                    generation=bot.generation,
                    desired=bot.desired,
                    executable=self.executable,
                    sandbox=self.sandboxing,
                    opener=self.identity,
                )
        except (BotConfigError, ValidationError) as exc:
            self._sync_intent(bot)
            await self._fail(bot, f"its config can't be rendered: {describe_error(exc)}", [])
            return
        except NoFreePort as exc:
            self._sync_intent(bot)
            self._put(self._record(bot).without_process(error=str(exc), crashed=True))
            await self._after_crash(bot, f"it could not get a port: {exc}", None, [])
            return
        except BotStartError as exc:
            self._sync_intent(bot)  # launch_bot recorded the crash
            await self._after_crash(bot, f"it did not start: {exc.reason}", exc.exit_code, exc.last_log_lines)
            return
        finally:
            bot.launching = False
        self._sync_intent(bot)  # launch_bot wrote the intent it was given; a command may have changed it since
        process, ready = launched.process, launched.ready
        bot.process = process
        bot.api = process.client(timeout=API_TIMEOUT)
        bot.freqtrade_version = ready.freqtrade_version
        bot.freqtrade_state = ready.state
        bot.actual = Actual.paused if ready.state == "paused" else Actual.running
        bot.healthy_since = time.monotonic()
        bot.unanswered_since = None
        await self._publish_started(bot, process, ready.freqtrade_version)
        bot.wake.set()  # first status at once

    async def _publish_started(self, bot: ManagedBot, process: BotProcess, version: str) -> None:
        await self._publish(
            BotStarted(
                event_id=_lifecycle_id(bot, "started", process),
                source=self.source,
                correlation_id=bot.correlation_id,
                data=BotStartedData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    pid=process.pid,
                    port=process.port,
                    freqtrade_version=version,
                    started_at=process.started_at,
                ),
            )
        )

    async def _poll(self, bot: ManagedBot, process: BotProcess) -> None:
        api = bot.api
        assert api is not None
        now = time.monotonic()
        try:
            snapshot = await api.snapshot()
        except BotApiError as exc:
            if bot.unanswered_since is None:
                bot.unanswered_since = now
            bot.healthy_since = None
            silent = now - bot.unanswered_since
            bot.last_error = f"its API does not answer ({exc})"[:2000]
            if silent >= self.settings.bot_unresponsive_timeout:
                await self._kill_as_crash(bot, process, f"its API did not answer for {silent:.0f} s ({exc})")
            return
        bot.unanswered_since = None
        if bot.healthy_since is None:
            bot.healthy_since = now
        elif now - bot.healthy_since >= self.settings.bot_restart_backoff_reset:
            bot.attempt = 0
        health = snapshot.health
        if snapshot.state in ("running", "paused"):
            last = health.last_process or health.bot_startup
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            limit = self.settings.bot_stall_timeout
            if health.last_process is None and self.models.runs_freqai(bot):
                limit = max(limit, self.settings.freqai_start_timeout)  # its first round loads and predicts all pairs
            if last is not None and datetime.now(UTC) - last > timedelta(seconds=limit):
                await self._kill_as_crash(bot, process, f"its trading loop has not run since {last.isoformat()}")
                return
        state = snapshot.state
        try:
            # During reload_config Freqtrade's state is "reload_config": setting it now would skip the reload.
            if state != "reload_config" and bot.desired is Desired.running and state != "running":
                await api.start()
                state = "running"
            elif state != "reload_config" and bot.desired is Desired.paused and state != "paused":
                await api.stopentry()
                state = "paused"
        except BotApiError as exc:
            log.warning("could not put the bot in its desired state", desired=bot.desired.value, error=str(exc))
            bot.last_error = f"could not make it {bot.desired.value}: {exc}"[:2000]
        bot.freqtrade_state = state
        await self.models.settle(self, bot)  # MODEL_LOADED once the bot uses a new model
        bot.actual = Actual.paused if state == "paused" else Actual.running
        bot.last_status_at = snapshot.read_at
        bot.open_trades = len(snapshot.open_trades)
        await bot.reporter.report_open(snapshot.open_trades)
        if bot.reporter.needs_history(snapshot.open_trades, snapshot.profit):
            try:
                await bot.reporter.report_closed(await closed_trades_from_api(api))
            except BotApiError as exc:
                log.warning("closed trades not readable", error=str(exc))
        last_process = health.last_process
        if last_process is not None and last_process.tzinfo is None:
            last_process = last_process.replace(tzinfo=UTC)
        await self._publish(
            BotStatus(
                source=self.source,
                data=BotStatusData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    state=state,
                    open_trades=[{k: v for k, v in t.items() if k != "orders"} for t in snapshot.open_trades],
                    profit=snapshot.profit,
                    last_process_at=last_process,
                ),
            )
        )

    async def _stop(self, bot: ManagedBot, process: BotProcess, reason: str) -> None:
        """Stop a bot we want stopped (REST stop, SIGTERM, SIGKILL after the grace period)."""
        _caused_by(bot)
        bot.actual = Actual.stopping
        async with bot.lock:
            result = await process.stop(self.settings.bot_stop_grace)
        await self._drop_process(bot)
        self._put(self._record(bot).without_process(exit_code=result.exit_code))
        await self._sweep_trades(bot)
        bot.actual = self._idle_actual(bot) if bot.desired not in RUNNING_STATES else Actual.stopped
        await self._publish(
            BotStopped(
                event_id=_lifecycle_id(bot, "stopped", process),
                source=self.source,
                correlation_id=bot.correlation_id,
                data=BotStoppedData(
                    bot_id=bot.uuid, generation=bot.generation, exit_code=result.exit_code, reason=reason[:2000]
                ),
            )
        )

    async def _on_exit(self, bot: ManagedBot, process: BotProcess) -> None:
        """The process ended without being asked to."""
        await process.terminate(grace=1.0)  # ends what it left in its group
        deadline = time.monotonic() + 2.0
        # A dying process can be reaped only once all its threads have exited.
        while process.spawned_here and process.exit_code is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        lines = process.last_log_lines(LOG_LINES)
        exit_code = process.exit_code
        reason = describe_exit(exit_code)
        await self._drop_process(bot)
        crashed = bot.desired in RUNNING_STATES and bot.failed_reason is None
        self._put(self._record(bot).without_process(exit_code=exit_code, error=reason, crashed=crashed))
        await self._sweep_trades(bot)
        log.warning("bot process ended unexpectedly", pid=process.pid, exit_code=exit_code)
        if crashed:
            await self._after_crash(bot, reason, exit_code, lines, stopped_id=_lifecycle_id(bot, "stopped", process))
            return
        bot.actual = self._idle_actual(bot)
        await self._publish(
            BotStopped(
                event_id=_lifecycle_id(bot, "stopped", process),
                source=self.source,
                data=BotStoppedData(bot_id=bot.uuid, generation=bot.generation, exit_code=exit_code, reason=reason),
            )
        )

    async def _kill_as_crash(self, bot: ManagedBot, process: BotProcess, reason: str) -> None:
        """End a process that is ours but not working (hung, stalled), and treat it as a crash."""
        log.warning("ending a bot that does not work", reason=reason, pid=process.pid)
        lines = process.last_log_lines(LOG_LINES)
        async with bot.lock:
            result = await process.terminate(self.settings.bot_stop_grace)
        await self._drop_process(bot)
        self._put(self._record(bot).without_process(exit_code=result.exit_code, error=reason, crashed=True))
        await self._sweep_trades(bot)
        await self._after_crash(bot, reason, result.exit_code, lines, stopped_id=_lifecycle_id(bot, "stopped", process))

    async def _after_crash(
        self,
        bot: ManagedBot,
        reason: str,
        exit_code: int | None,
        lines: list[str],
        *,
        stopped_id: uuid.UUID | None = None,
    ) -> None:
        """Count the crash (already in the state file): restart later, or fail after a crash loop."""
        crashes = self.crash_count(bot)
        window = f"{self.settings.bot_crash_loop_window / 60:g} min"
        bot.healthy_since = None
        if crashes > self.settings.bot_crash_loop_max:
            await self._fail(
                bot,
                f"{reason}; it crashed {crashes} times in {window} (more than {self.settings.bot_crash_loop_max}), "
                "so it is not restarted: fix the cause, then send START_BOT",
                lines,
                crash_count=crashes,
            )
            return
        bot.attempt += 1
        BOT_RESTARTS.labels(reason="crash").inc()
        delay = self._backoff(bot.attempt)
        bot.next_start_at = time.monotonic() + delay
        bot.actual = Actual.starting
        bot.last_error = reason[:2000]
        log.warning("bot crashed; restarting it", reason=reason, crashes=crashes, restart_in_s=round(delay, 2))
        await self._publish(
            BotStopped(
                event_id=stopped_id or uuid.uuid4(),
                source=self.source,
                data=BotStoppedData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    exit_code=exit_code,
                    reason=f"crashed: {reason}; restarting in {delay:.1f} s "
                    f"(crash {crashes} in {window}; more than {self.settings.bot_crash_loop_max} fail it)"[:2000],
                ),
            )
        )

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        delay = min(s.bot_restart_backoff_max, s.bot_restart_backoff_initial * 2 ** (attempt - 1))
        return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not crypto

    async def _fail(self, bot: ManagedBot, reason: str, lines: list[str], *, crash_count: int | None = None) -> None:
        bot.failed_reason = reason[:2000]
        self._save_failed(bot)
        bot.actual = Actual.failed
        bot.last_error = bot.failed_reason
        log.error("bot failed", reason=reason)
        BOT_FAILURES.inc()
        secrets = self.secrets_of(bot)
        await self._publish(
            BotFailed(
                source=self.source,
                correlation_id=bot.correlation_id,
                data=BotFailedData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    reason=bot.failed_reason,
                    crash_count=self.crash_count(bot) if crash_count is None else crash_count,
                    last_log_lines=[_scrub(line, secrets)[:1000] for line in lines[-LOG_LINES:]],
                ),
            )
        )

    def _clear_failure(self, bot: ManagedBot) -> None:
        bot.failed_reason = None
        self._save_failed(bot)
        self._put(self._record(bot).model_copy(update={"crash_times": []}))

    async def _drop_process(self, bot: ManagedBot) -> None:
        process = bot.process
        bot.process = None
        bot.freqtrade_state = None
        bot.unanswered_since = None
        bot.open_trades = 0
        if process is not None:
            self.pool.release(process.port)
        await self._close_api(bot)

    async def _close_api(self, bot: ManagedBot) -> None:
        api, bot.api = bot.api, None
        if api is not None:
            with contextlib.suppress(Exception):
                await api.aclose()

    async def _sweep_trades(self, bot: ManagedBot) -> None:
        """Report what the bot's database says about trades its API can no longer tell."""
        closed = closed_trades_from_db(bot.files)
        if closed:
            await bot.reporter.report_closed(closed)

    def _log_tail(self, bot: ManagedBot) -> list[str]:
        for path in (bot.files.log, bot.files.console_log):
            try:
                with open_read_nofollow(path) as f:
                    lines = f.read().decode(errors="replace").splitlines()
            except OSError:  # missing, or not a regular file (never followed)
                continue
            if lines:
                return lines[-LOG_LINES:]
        return []

    def secrets_of(self, bot: ManagedBot) -> list[str]:
        """The bot's secrets as they may appear in its files (to scrub log lines before they leave)."""
        found: list[str] = []  # the spec holds only sealed credentials: the config has them in the clear
        try:
            config = bot.files.read_config()
        except (OSError, ValueError):
            config = {}
        api = config.get("api_server", {}) if isinstance(config, dict) else {}
        exchange = config.get("exchange", {}) if isinstance(config, dict) else {}
        sections = ((api, ("password", "jwt_secret_key", "ws_token")), (exchange, ("key", "secret", "password")))
        for section, keys in sections:
            if isinstance(section, dict):
                found += [str(section[k]) for k in keys if section.get(k)]
        return [s for s in found if len(s) >= 6]

    # ================================================================== persistence

    def _record(self, bot: ManagedBot) -> BotRecord:
        return self.state.get(bot.bot_id) or BotRecord(
            bot_id=bot.bot_id, generation=bot.generation, desired=bot.desired, config_path=str(bot.files.config)
        )

    def _put(self, record: BotRecord) -> None:
        self.state.put(record)

    def _set_intent(self, bot: ManagedBot, desired: Desired, generation: int) -> None:
        bot.desired = desired
        bot.generation = max(bot.generation, generation)
        self._sync_intent(bot)

    def _intent_record(self, bot: ManagedBot) -> BotRecord:
        """The bot's record (read fresh: the process fields stay) with its desired state, generation and pending
        restart as they are in memory."""
        update = {"desired": bot.desired, "generation": bot.generation, "restart_pending": bot.restart_requested}
        return self._record(bot).model_copy(update=update)

    def _sync_intent(self, bot: ManagedBot) -> None:
        """Write the bot's intent into its record."""
        self._put(self._intent_record(bot))

    def _request_restart(self, bot: ManagedBot) -> None:
        """Ask for a new process (it takes the newest spec), durably: a gateway that dies before the supervisor
        acts finds ``restart_pending`` in the state file and restarts the process it adopts."""
        bot.restart_requested = True
        self._sync_intent(bot)

    def _save_spec(self, bot: ManagedBot, spec: BotSpec) -> None:
        bot.files.prepare()
        atomic_write(bot.files.meta / SPEC_FILE, spec.model_dump_json().encode())  # 0600: may hold exchange keys

    def _load_spec(self, bot: ManagedBot) -> BotSpec | None:
        path = bot.files.meta / SPEC_FILE
        try:
            return BotSpec.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError) as exc:
            log.error("bot spec unreadable", bot_id=bot.bot_id, path=str(path), error=describe_error(exc)[:300])
            return None

    def _save_failed(self, bot: ManagedBot) -> None:
        path = bot.files.meta / SUPERVISION_FILE
        if not bot.files.folder.exists():
            return
        atomic_write(path, json.dumps({"failed": bot.failed_reason}).encode())

    def _load_failed(self, bot: ManagedBot) -> str | None:
        try:
            doc: Any = json.loads((bot.files.meta / SUPERVISION_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        failed = doc.get("failed") if isinstance(doc, dict) else None
        return str(failed) if failed else None

    async def _publish(self, message: Envelope) -> None:
        await self.events.publish(message)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _caused_by(bot: ManagedBot) -> None:
    """Log what the supervisor does now (a start, a stop) under the correlation id of the command that asked
    for it; ``_step`` unbinds it, so the polls that follow are not attributed to that request."""
    if bot.correlation_id:
        structlog.contextvars.bind_contextvars(correlation_id=bot.correlation_id)


def _scrub(line: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, "***")
    return line
