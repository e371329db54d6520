"""Every bot's supervisor: one task per bot, the only code that starts, stops or restarts its process.

The task wakes on a command (:meth:`Supervisor.wake`) and on a timer (``status_interval`` while the bot runs,
:data:`IDLE_RECONCILE` otherwise) and makes one move of the bot's actual state toward its desired state
(:meth:`Supervisor._step`): launch a bot meant to run, stop one meant to stop, end one that hangs, restart one
asked to, or poll a running one (status, trades, liveness, Freqtrade's state put back when it drifted). The
restart policy (backoff, crash loop, failed) is here, and so is the bot's record in the state file (its intent:
desired state, generation, a restart asked for; its process; its crashes). The decisions are in
:mod:`trading_gateway.fleet.service`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from shared.bus.messages import (
    BotFailed,
    BotFailedData,
    BotStarted,
    BotStartedData,
    BotStatus,
    BotStatusData,
    BotStopped,
    BotStoppedData,
    Envelope,
)
from shared.logging import get_logger
from shared.metrics import BOT_FAILURES, BOT_RESTARTS
from trading_gateway.bots.client import BotApiError, FreqtradeClient
from trading_gateway.bots.files import BotConfigError
from trading_gateway.bots.launch import launch_bot
from trading_gateway.bots.launcher import Launchers, launcher_folder
from trading_gateway.bots.ports import NoFreePort, PortPool
from trading_gateway.bots.process import BotProcess, BotStartError, bot_environment
from trading_gateway.bots.sandbox import BotSandboxing
from trading_gateway.bots.state import BotRecord, Desired, StateFile
from trading_gateway.bots.trade_store import database_url_of
from trading_gateway.bus.events import EventPublisher
from trading_gateway.config import GatewaySettings
from trading_gateway.fleet.bot import (
    LOG_LINES,
    RUNNING_STATES,
    Actual,
    ManagedBot,
    caused_by,
    describe_error,
    describe_exit,
    lifecycle_id,
    save_failed,
    scrub,
    secrets_of,
)
from trading_gateway.fleet.trades import closed_trades_from_api, closed_trades_from_db

if TYPE_CHECKING:
    from trading_gateway.fleet.leases import LeaseKeeper
from trading_gateway.freqai.service import ModelService
from trading_gateway.identity import GatewayIdentity
from trading_gateway.relay.keeper import RelayKeeper

log = get_logger(__name__)

IDLE_RECONCILE = 10.0  # seconds between reconciles of a bot that has no process
API_TIMEOUT = 5.0  # seconds per REST call of a status poll


class Supervisor:
    """What the supervisor tasks share (settings, state file, ports, events, models, sandbox) and the moves
    they make; the fleet owns the bots and tells it when to act."""

    def __init__(
        self,
        settings: GatewaySettings,
        events: EventPublisher,
        models: ModelService,
        identity: GatewayIdentity,
        state: StateFile,
        pool: PortPool,
        *,
        executable: Path | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.models = models
        self.identity = identity
        self.state = state
        self.pool = pool
        self.executable = executable
        self.source = f"gateway:{settings.gateway_id}"
        self.sandboxing: BotSandboxing | None = None  # found out at start (a probe in a child process)
        # Bots are forked by a launcher (FREQFLEET_BOT_LAUNCHER=fork, and Freqtrade's own program): the plain one or
        # the one with FreqAI's libraries, each started with the first bot of its kind.
        forking = settings.bot_launcher == "fork" and executable is None
        self.launchers = (
            Launchers(launcher_folder(settings.gateway_data_dir), env=bot_environment()) if forking else None
        )
        self.stopping = False  # the gateway is shutting down: no supervisor is started any more
        self.relay: RelayKeeper | None = None  # the market-data relay (FREQFLEET_RELAY), set by the fleet
        self.leases: LeaseKeeper | None = None  # FREQFLEET_LEASE_SECONDS: no start without a lease (fleet/leases.py)

    def market_url(self, bot: ManagedBot) -> str:
        """Where a new process of ``bot`` gets market data: the relay when it carries the bot's exchange, else the
        simulator (a real exchange without a relay adapter is reached directly, whatever this says)."""
        relayed = None
        if self.relay is not None and bot.spec is not None:
            relayed = self.relay.url_for(bot.spec.exchange, bot.bot_id)
        return relayed or self.settings.simulator_url

    def market_data(self, bot: ManagedBot) -> str | None:
        """How the bot's process gets market data, in words (None without a process)."""
        if bot.process is None or bot.spec is None:
            return None
        if self.relay is not None and bot.market_url is not None and bot.market_url.startswith(self.relay.base_url):
            return "relay"
        if self.relay is None:
            return "direct: the relay is off (FREQFLEET_RELAY=false)"
        if self.relay.url_for(bot.spec.exchange, bot.bot_id) is None:
            return f"direct: the relay has no adapter for {bot.spec.exchange!r}"
        return "direct: started before the relay; relayed from its next start"

    async def stop_at_shutdown(self, bot: ManagedBot, grace: float) -> None:
        process = bot.process
        assert process is not None
        result = await process.stop(grace)
        await self.drop_process(bot)
        self.put(self.record(bot).without_process(exit_code=result.exit_code))
        await self.sweep_trades(bot)
        bot.actual = Actual.stopped
        reason = "the gateway shut down and stopped its bots (stop_bots_on_shutdown); it restarts with the gateway"
        await self.publish(
            BotStopped(
                event_id=lifecycle_id(bot, "stopped", process),
                source=self.source,
                data=BotStoppedData(
                    bot_id=bot.uuid, generation=bot.generation, exit_code=result.exit_code, reason=reason
                ),
            )
        )

    def crash_count(self, bot: ManagedBot) -> int:
        record = self.state.get(bot.bot_id)
        if record is None:
            return 0
        since = datetime.now(UTC) - timedelta(seconds=self.settings.bot_crash_loop_window)
        return sum(1 for t in record.crash_times if t >= since)

    def wake(self, bot: ManagedBot) -> None:
        self.ensure(bot)
        bot.wake.set()

    def ensure(self, bot: ManagedBot) -> None:
        if self.stopping or bot.in_emergency:
            return
        if bot.task is None or bot.task.done():
            # A context of its own: the correlation id of the request that created it must not stick.
            bot.task = asyncio.create_task(
                self._supervise(bot), name=f"bot-supervisor:{bot.bot_id}", context=contextvars.Context()
            )

    async def _supervise(self, bot: ManagedBot) -> None:
        structlog.contextvars.bind_contextvars(bot_id=bot.bot_id)
        while not self.stopping:
            bot.wake.clear()
            generation = bot.generation  # a command taken during the step is acted on by the next one
            try:
                await self._step(bot)
                bot.settled_generation = generation
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

    def idle_actual(self, bot: ManagedBot) -> Actual:
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
        if process is not None and self.leases is not None and self.leases.must_stop():
            silent = self.leases.silent_for() or 0.0
            await self._stop(bot, process, f"this gateway could not renew its leases for {silent:.0f} s (fenced)")
            return
        if bot.desired not in RUNNING_STATES:
            if process is not None:
                await self._stop(bot, process, bot.stop_reason or f"its desired state is {bot.desired.value}")
            else:
                self.pool.release_bot(bot.bot_id)
                bot.actual = self.idle_actual(bot)
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
        caused_by(bot)
        spec = bot.spec
        if spec is None:
            await self._fail(bot, "this gateway does not have the bot's spec: send START_BOT again", [])
            return
        if self.leases is not None and (why := await self.leases.may_start(bot)) is not None:
            bot.actual = Actual.starting
            bot.last_error = f"not started: {why}"
            bot.next_start_at = time.monotonic() + self.leases.interval
            return
        bot.actual = Actual.starting
        bot.launching = True
        bot.restart_requested = False  # this start uses the newest spec; a RESTART from now on asks for another
        market_url = self.market_url(bot)
        try:
            async with bot.lock:
                launched = await launch_bot(
                    spec,
                    bot.files,
                    self.pool,
                    simulator_url=market_url,
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
                    launcher=None
                    if self.launchers is None
                    else await self.launchers.get(freqai=spec.freqai is not None),
                    watchdog=self.leases is not None,
                )
        except (BotConfigError, ValidationError) as exc:
            self.sync_intent(bot)
            await self._fail(bot, f"its config can't be rendered: {describe_error(exc)}", [])
            return
        except NoFreePort as exc:
            self.sync_intent(bot)
            self.put(self.record(bot).without_process(error=str(exc), crashed=True))
            await self.after_crash(bot, f"it could not get a port: {exc}", None, [])
            return
        except BotStartError as exc:
            self.sync_intent(bot)  # launch_bot recorded the crash
            await self.after_crash(bot, f"it did not start: {exc.reason}", exc.exit_code, exc.last_log_lines)
            return
        finally:
            bot.launching = False
        self.sync_intent(bot)  # launch_bot wrote the intent it was given; a command may have changed it since
        process, ready = launched.process, launched.ready
        bot.process = process
        bot.market_url = market_url
        bot.api = process.client(timeout=API_TIMEOUT)
        bot.freqtrade_version = ready.freqtrade_version
        bot.freqtrade_state = ready.state
        bot.actual = Actual.paused if ready.state == "paused" else Actual.running
        bot.healthy_since = time.monotonic()
        bot.unanswered_since = None
        await self.publish_started(bot, process, ready.freqtrade_version)
        bot.wake.set()  # first status at once

    async def publish_started(self, bot: ManagedBot, process: BotProcess, version: str) -> None:
        await self.publish(
            BotStarted(
                event_id=lifecycle_id(bot, "started", process),
                source=self.source,
                correlation_id=bot.correlation_id,
                data=BotStartedData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    pid=process.pid,
                    port=process.port,
                    freqtrade_version=version,
                    started_at=process.started_at,
                    launcher=process.launcher,
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
            if await self._answers(api):
                # Alive: what failed needs the exchange (open trades' current rates), which is slow or refusing this
                # IP (a 429 or a 418 ban Freqtrade waits out). Killing the bot would not help, and restarted it
                # could not even load its markets.
                bot.unanswered_since = None
                why = "though its API answers: the exchange is slow or refusing this IP"
                bot.last_error = f"its status can't be read ({exc}), {why}"[:2000]
                return
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
        await self.models.settle(bot)  # MODEL_LOADED once the bot uses a new model
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
        await self.publish(
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

    @staticmethod
    async def _answers(api: FreqtradeClient) -> bool:
        """Whether the bot's API answers a request that does not touch the exchange (``show_config``)."""
        try:
            await api.show_config()
        except BotApiError:
            return False
        return True

    async def _stop(self, bot: ManagedBot, process: BotProcess, reason: str) -> None:
        """Stop a bot we want stopped (REST stop, SIGTERM, SIGKILL after the grace period)."""
        caused_by(bot)
        bot.actual = Actual.stopping
        async with bot.lock:
            result = await process.stop(self.settings.bot_stop_grace)
        await self.drop_process(bot)
        self.put(self.record(bot).without_process(exit_code=result.exit_code))
        await self.sweep_trades(bot)
        bot.actual = self.idle_actual(bot) if bot.desired not in RUNNING_STATES else Actual.stopped
        await self.publish(
            BotStopped(
                event_id=lifecycle_id(bot, "stopped", process),
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
        await self.drop_process(bot)
        crashed = bot.desired in RUNNING_STATES and bot.failed_reason is None
        self.put(self.record(bot).without_process(exit_code=exit_code, error=reason, crashed=crashed))
        await self.sweep_trades(bot)
        log.warning("bot process ended unexpectedly", pid=process.pid, exit_code=exit_code)
        if crashed:
            await self.after_crash(bot, reason, exit_code, lines, stopped_id=lifecycle_id(bot, "stopped", process))
            return
        bot.actual = self.idle_actual(bot)
        await self.publish(
            BotStopped(
                event_id=lifecycle_id(bot, "stopped", process),
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
        await self.drop_process(bot)
        self.put(self.record(bot).without_process(exit_code=result.exit_code, error=reason, crashed=True))
        await self.sweep_trades(bot)
        await self.after_crash(bot, reason, result.exit_code, lines, stopped_id=lifecycle_id(bot, "stopped", process))

    async def after_crash(
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
        await self.publish(
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
        save_failed(bot)
        bot.actual = Actual.failed
        bot.last_error = bot.failed_reason
        log.error("bot failed", reason=reason)
        BOT_FAILURES.inc()
        secrets = secrets_of(bot)
        await self.publish(
            BotFailed(
                source=self.source,
                correlation_id=bot.correlation_id,
                data=BotFailedData(
                    bot_id=bot.uuid,
                    generation=bot.generation,
                    reason=bot.failed_reason,
                    crash_count=self.crash_count(bot) if crash_count is None else crash_count,
                    last_log_lines=[scrub(line, secrets)[:1000] for line in lines[-LOG_LINES:]],
                ),
            )
        )

    def clear_failure(self, bot: ManagedBot) -> None:
        bot.failed_reason = None
        save_failed(bot)
        self.put(self.record(bot).model_copy(update={"crash_times": []}))

    async def drop_process(self, bot: ManagedBot) -> None:
        process = bot.process
        bot.process = None
        bot.freqtrade_state = None
        bot.unanswered_since = None
        bot.open_trades = 0
        if process is not None:
            self.pool.release(process.port)
        await self.close_api(bot)

    async def close_api(self, bot: ManagedBot) -> None:
        api, bot.api = bot.api, None
        if api is not None:
            with contextlib.suppress(Exception):
                await api.aclose()

    async def sweep_trades(self, bot: ManagedBot) -> None:
        """Report what the bot's database says about trades its API can no longer tell."""
        url = database_url_of(bot.spec, bot.bot_id, self.identity)
        closed = await asyncio.to_thread(closed_trades_from_db, bot.files, url)
        if closed:
            await bot.reporter.report_closed(closed)

    def record(self, bot: ManagedBot) -> BotRecord:
        return self.state.get(bot.bot_id) or BotRecord(
            bot_id=bot.bot_id, generation=bot.generation, desired=bot.desired, config_path=str(bot.files.config)
        )

    def put(self, record: BotRecord) -> None:
        self.state.put(record)

    def set_intent(self, bot: ManagedBot, desired: Desired, generation: int) -> None:
        bot.desired = desired
        bot.generation = max(bot.generation, generation)
        self.sync_intent(bot)

    def intent_record(self, bot: ManagedBot) -> BotRecord:
        """The bot's record (read fresh: the process fields stay) with its desired state, generation and pending
        restart as they are in memory."""
        update = {"desired": bot.desired, "generation": bot.generation, "restart_pending": bot.restart_requested}
        return self.record(bot).model_copy(update=update)

    def sync_intent(self, bot: ManagedBot) -> None:
        """Write the bot's intent into its record."""
        self.put(self.intent_record(bot))

    def request_restart(self, bot: ManagedBot) -> None:
        """Ask for a new process (it takes the newest spec), durably: a gateway that dies before the supervisor
        acts finds ``restart_pending`` in the state file and restarts the process it adopts."""
        bot.restart_requested = True
        self.sync_intent(bot)

    async def publish(self, message: Envelope) -> None:
        await self.events.publish(message)
