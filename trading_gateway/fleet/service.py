"""The fleet: this gateway's bots, their desired and actual state, and one supervisor task per bot.

Three files: :mod:`.bot` (a bot's record in memory, its states, its view, its files besides Freqtrade's),
:mod:`.supervisor` (the one state machine every bot's task runs, the restart policy, the state file's
records), and this one, ``Fleet``: the bots of this gateway, the commands that change what they should be
doing, the reads, the emergency stop, adoption at start and shutdown.

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
import contextvars
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from shared.bus.leases import Holder
from shared.bus.messages import (
    BotSpec,
    EmergencyOutcome,
    EmergencyStopCompleted,
    EmergencyStopCompletedData,
    InventoryEntry,
)
from shared.logging import get_logger
from shared.metrics import EMERGENCY_STOPS
from shared.sandbox.host import detect
from trading_gateway.bots import BOTS_DIR, STATE_FILE
from trading_gateway.bots.adoption import AdoptionReport, adopt
from trading_gateway.bots.client import BotApiError, FreqtradeClient
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.emergency import EmergencyResult, FleetEmergencyResult, emergency_stop_all
from trading_gateway.bots.files import BotConfigError, BotFiles, market_url_in, render_config
from trading_gateway.bots.launcher import launcher_folder
from trading_gateway.bots.ports import NoFreePort, PortPool
from trading_gateway.bots.process import BotProcess
from trading_gateway.bots.sandbox import BotSandboxing
from trading_gateway.bots.state import Desired, StateFile
from trading_gateway.bots.trade_store import database_url_of
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import (
    RUNNING_STATES,
    SPEC_FILE,
    SUPERVISION_FILE,
    Actual,
    BotView,
    CommandRefused,
    ManagedBot,
    describe_error,
    load_failed,
    load_spec,
    log_tail,
    save_spec,
    storable,
)
from trading_gateway.fleet.leases import LeaseKeeper
from trading_gateway.fleet.supervisor import API_TIMEOUT, Supervisor
from trading_gateway.fleet.trades import TradeReporter
from trading_gateway.freqai.installs import MODELS_FILE
from trading_gateway.freqai.service import ModelDelivery, ModelService
from trading_gateway.identity import GatewayIdentity, load_or_create
from trading_gateway.relay.keeper import RelayKeeper

log = get_logger(__name__)

WATCHDOG_INTERVAL = 10.0  # seconds between checks that every bot has a live supervisor
SHUTDOWN_GRACE = 5.0  # longest grace at shutdown (`freqfleet up` kills the gateway 10 s after SIGTERM)


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
        self.source = f"gateway:{settings.gateway_id}"
        self.root = settings.gateway_data_dir
        self.bots_root = self.root / BOTS_DIR
        self.pool = PortPool(settings.bot_port_range_start, settings.bot_port_range_end)
        self.state = StateFile(self.root / STATE_FILE)
        self.bots: dict[str, ManagedBot] = {}
        self.adoption: AdoptionReport | None = None
        self._mutex = asyncio.Lock()  # commands that change intent, and emergency stops, one at a time
        self._watchdog: asyncio.Task[None] | None = None
        self._reports: set[asyncio.Task[None]] = set()  # emergency reports being published
        self.models = models or ModelService(settings, events)  # FreqAI models: without keys it refuses them
        self.supervisor = Supervisor(
            settings, events, self.models, self.identity, self.state, self.pool, executable=executable
        )
        self.relay = RelayKeeper(settings) if settings.relay else None
        self.supervisor.relay = self.relay

    # ================================================================== lifecycle

    def use_leases(self, redis: Any) -> LeaseKeeper:
        """Hold this gateway's bots by leases (FREQFLEET_LEASE_SECONDS): no start without one, a bot placed elsewhere
        stopped here; the caller starts the keeper (its renewals) and stops it."""
        keeper = LeaseKeeper(redis, self.settings.gateway_id, self.bots, self.settings.lease_seconds)
        keeper.on_lost = self._lost
        self.supervisor.leases = keeper
        return keeper

    async def _lost(self, bot_id: uuid.UUID, holder: Holder) -> None:
        bot = self.bot(bot_id)
        if bot is not None:
            reason = f"gateway {holder.gateway_id} holds it now (from generation {holder.generation}): stopped here"
            await self.stop_bot(bot_id, bot.generation, reason=reason)

    async def start(self, adopt_timeout: float = 10.0) -> AdoptionReport:
        """Adopt what still runs, restart what died and should run, start the supervisors."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # keys, credentials and every bot's records: the gateway's alone
        host = await asyncio.to_thread(
            detect, self.settings.sandbox_uid_base, self.settings.sandbox_limits, self.settings.allow_unsandboxed
        )
        self.supervisor.sandboxing = BotSandboxing(host, self.root)
        if self.relay is not None:  # before any bot starts: their configs name it
            await self.relay.start()
        exits = launcher_folder(self.root) / "exits"  # forked bots' exit codes, whichever gateway forked them
        report = await adopt(self.state, self.pool, bots_root=self.bots_root, api_timeout=adopt_timeout, exits=exits)
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
            bot.spec = load_spec(bot)
            bot.failed_reason = load_failed(bot)
            bot.last_error = record.last_error
            bot.actual = self.supervisor.idle_actual(bot)
        for adopted in report.adopted:
            if (live := self.bots.get(adopted.record.bot_id)) is None:
                continue
            process = adopted.process
            live.process = process
            live.api = process.client(timeout=API_TIMEOUT)
            live.market_url = market_url_in(live.files.config)
            live.freqtrade_version = adopted.record.freqtrade_version
            live.freqtrade_state = adopted.state
            live.actual = Actual.paused if adopted.state == "paused" else Actual.running
            live.healthy_since = time.monotonic()
            live.restart_requested = adopted.record.restart_pending  # accepted before the last gateway ended
            await self.supervisor.publish_started(live, process, adopted.record.freqtrade_version or "unknown")
        for unresponsive in report.unresponsive:
            if (silent := self.bots.get(unresponsive.record.bot_id)) is None:
                continue
            silent.process = unresponsive.process
            silent.market_url = market_url_in(silent.files.config)
            silent.api = unresponsive.process.client(timeout=API_TIMEOUT)
            silent.kill_reason = f"it did not answer when this gateway started ({unresponsive.reason})"
        for dead in report.dead:
            gone = self.bots.get(dead.record.bot_id)
            if gone is not None and dead.should_restart and gone.failed_reason is None:
                lines = log_tail(gone)
                await self.supervisor.after_crash(
                    gone, f"found dead when the gateway started: {dead.reason}", None, lines
                )
        for bot in self.bots.values():
            self.supervisor.ensure(bot)
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
        self.supervisor.stopping = True
        tasks = [t for t in [self._watchdog, *(b.task for b in self.bots.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        live = [b for b in self.bots.values() if b.process is not None]
        if stop_bots:
            grace = min(self.settings.bot_stop_grace, SHUTDOWN_GRACE)
            results = await asyncio.gather(
                *(self.supervisor.stop_at_shutdown(b, grace) for b in live), return_exceptions=True
            )
            for bot, result in zip(live, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("bot not stopped at shutdown", bot_id=bot.bot_id, error=repr(result))
        else:
            for bot in live:
                await self.supervisor.close_api(bot)
        if self.supervisor.launchers is not None:  # it exits once its bots have (at once when they were stopped)
            await self.supervisor.launchers.close(wait=5.0 if stop_bots else 0.0)
        await self.models.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._reports:  # emergency reports still on their way to Redis or the outbox
            await asyncio.gather(*self._reports, return_exceptions=True)
        log.info("fleet stopped", stopped_bots=stop_bots, bots_with_a_process=len(live))

    async def _watch(self) -> None:
        """A supervisor that died of a bug is logged and replaced; idle bots are reconciled on a timer too."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            for bot in list(self.bots.values()):
                task = bot.task
                if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("bot supervisor died; replacing it", bot_id=bot.bot_id, error=repr(task.exception()))
                self.supervisor.ensure(bot)

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
            InventoryEntry(
                bot_id=b.uuid,
                generation=b.generation,
                desired=b.desired.value,
                actual=b.actual.value,
                launcher=None if b.process is None else b.process.launcher,
                settled=b.settled_generation >= b.generation,
            )
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
                    launcher=None if process is None else process.launcher,
                    last_status_at=bot.last_status_at,
                    last_status_age_seconds=None
                    if bot.last_status_at is None
                    else round((now - bot.last_status_at).total_seconds(), 3),
                    open_trades=bot.open_trades,
                    crash_count=self.supervisor.crash_count(bot),
                    last_error=bot.failed_reason or bot.last_error,
                    market_data=self.supervisor.market_data(bot),
                    relay=None if self.relay is None else self.relay.bot_numbers(bot.bot_id),
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
                self.supervisor.request_restart(
                    bot
                )  # a new spec for a running (or starting) bot: start it again with it
            save_spec(bot, spec)
            bot.spec = spec
            installed = None
            if model is not None:  # before the process starts, so it predicts without training
                before = self.models.runtime(bot)
                installed = self.models.install(bot, model, reason="start")
                if not idle and installed is not None and self.models.runtime(bot) != before:
                    self.supervisor.request_restart(bot)  # another model class or other features: a new process
            if bot.failed_reason is not None or bot.desired is Desired.halted:
                self.supervisor.clear_failure(bot)
            bot.attempt = 0
            bot.next_start_at = 0.0
            bot.stop_reason = None
            bot.correlation_id = correlation_id
            self.supervisor.set_intent(bot, Desired.running, generation)
            self.supervisor.wake(bot)
            if installed is not None:
                self.models.watch(bot, installed)

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
            self.supervisor.set_intent(bot, Desired.stopped, generation)
            self.supervisor.wake(bot)
            return True

    async def pause_bot(
        self, bot_id: uuid.UUID, generation: int, *, paused: bool, correlation_id: str | None = None
    ) -> None:
        async with self._mutex:
            bot = self._known_running(bot_id, "pause" if paused else "resume")
            bot.correlation_id = correlation_id
            self.supervisor.set_intent(bot, Desired.paused if paused else Desired.running, generation)
            self.supervisor.wake(bot)

    async def restart_bot(self, bot_id: uuid.UUID, generation: int, *, correlation_id: str | None = None) -> None:
        async with self._mutex:
            bot = self.bot(bot_id)
            if bot is None:
                raise CommandRefused(f"this gateway has no bot {bot_id}: send START_BOT first")
            if bot.desired not in RUNNING_STATES:
                raise CommandRefused(f"bot {bot_id} is {bot.desired.value}: send START_BOT to start it")
            if bot.failed_reason is not None:
                self.supervisor.clear_failure(bot)
            bot.attempt = 0
            bot.next_start_at = 0.0
            bot.correlation_id = correlation_id
            if bot.process is not None or bot.launching:
                self.supervisor.request_restart(bot)
            self.supervisor.set_intent(bot, bot.desired, generation)
            self.supervisor.wake(bot)

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
        self.supervisor.wake(bot)  # report the exit at once
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
            save_spec(bot, spec)
            bot.spec = spec
            bot.correlation_id = correlation_id
            self.supervisor.set_intent(bot, bot.desired, generation)
            process, api = bot.process, bot.api
            reload = False
            if bot.launching:
                self.supervisor.request_restart(bot)
                how = "the bot was starting: it starts again with the new config"
            elif process is None or api is None or not process.is_alive():
                how = "stored: the bot is not running; it uses the new config when it starts"
            elif old is None or old.strategy_class != spec.strategy_class:
                # Freqtrade was started with --strategy <class>: a new class needs a new process.
                self.supervisor.request_restart(bot)
                how = "the strategy class changed: the bot restarts with the new config"
            else:
                reload = True
        if reload and process is not None and api is not None:  # outside the mutex: an emergency never waits for it
            how = await self._reload(bot, process, api, spec)
        self.supervisor.wake(bot)
        log.info("bot config updated", bot_id=bot.bot_id, generation=generation, how=how)
        return how

    async def _reload(self, bot: ManagedBot, process: BotProcess, api: FreqtradeClient, spec: BotSpec) -> str:
        async with bot.lock:
            if bot.process is not process or not process.is_alive():
                self.supervisor.request_restart(bot)
                return "the bot's process changed meanwhile: it starts again with the new config"
            config = render_config(
                spec,
                bot.files,
                port=process.port,
                credentials=process.credentials,
                simulator_url=bot.market_url or self.settings.simulator_url,  # its sandbox may connect there only
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
                self.supervisor.request_restart(bot)
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
            self.state.put_many([self.supervisor.intent_record(bot) for bot in known])
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
                self.supervisor.ensure(bot)
            data = EmergencyStopCompletedData(
                command_id=command_id,
                gateway_id=self.settings.gateway_id,
                results=outcomes,
                seconds=round(time.monotonic() - t0, 3),
                seconds_to_all_paused=_rounded(fleet.seconds_to_all_paused),
                seconds_to_all_exited=_rounded(fleet.seconds_to_all_exited),
            )
            log.warning(
                "emergency stop done",
                bots=len(wanted),
                outcomes=dict(Counter(o.outcome for o in outcomes)),
                seconds=data.seconds,
                seconds_to_all_paused=data.seconds_to_all_paused,
                seconds_to_all_exited=data.seconds_to_all_exited,
                command_id=command_id,
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
                await self.supervisor.sweep_trades(bot)
            except Exception:  # one bot's trade file must not keep the completion from being reported
                log.exception("trades of an emergency-stopped bot not reported", bot_id=bot.bot_id)
        await self.supervisor.publish(completed)

    async def _halt(self, known: list[ManagedBot], t0: float) -> tuple[list[EmergencyOutcome], FleetEmergencyResult]:
        """Steps 2 and 3 of an emergency stop (the caller holds the mutex and has recorded the intent)."""
        # 2. Take the bots from their supervisors (a start in progress ends with its process).
        tasks = [bot.task for bot in known if bot.task is not None and not bot.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # 3. All at once: stopentry, forceexit all, stop, terminate.
        running = [bot for bot in known if bot.process is not None]
        urls = {bot.bot_id: database_url_of(bot.spec, bot.bot_id, self.identity) for bot in running}
        fleet = await emergency_stop_all(
            [bot.process for bot in running if bot.process is not None],
            grace=self.settings.bot_stop_grace,
            started=t0,  # timings count from the request, supervisors' hand-over included
            database_urls={bot_id: url for bot_id, url in urls.items() if url is not None},
        )
        results: dict[str, EmergencyResult] = {r.bot_id: r for r in fleet.results}
        outcomes: list[EmergencyOutcome] = []
        for bot in known:
            result = results.get(bot.bot_id)
            process = bot.process
            if result is None:
                result = EmergencyResult(bot.bot_id, "not_running", detail=f"it had no process ({bot.actual})")
            if process is not None and result.outcome != "failed":
                await self.supervisor.drop_process(bot)
                self.supervisor.put(self.supervisor.record(bot).without_process(exit_code=process.exit_code))
            if result.outcome == "failed":
                bot.last_error = f"emergency stop failed: {result.detail}"
            else:
                self.supervisor.clear_failure(bot)
                bot.actual = Actual.halted
                bot.settled_generation = bot.generation
            outcomes.append(result.to_message())
        return outcomes, fleet

    # ================================================================== bots

    def _new_bot(self, bot_id: uuid.UUID, desired: Desired, generation: int, files: BotFiles) -> ManagedBot:
        reporter = TradeReporter(bot_id, files.folder, self.source, self.supervisor.publish)
        bot = ManagedBot(uuid=bot_id, files=files, desired=desired, generation=generation, spec=None, reporter=reporter)
        self.bots[bot.bot_id] = bot
        return bot


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
