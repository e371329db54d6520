"""Start one bot from its spec, end to end: port, credentials, files, process, readiness, state.

:func:`launch_bot` is what a START_BOT handler calls. It validates and renders before anything is
spawned (a wrong spec costs no process), records the process in the state file right after the
spawn (a gateway that dies during the bot's ~3 s start leaves a record the next gateway adopts),
and retries on a fresh port when another program turns out to hold the bot's port (the pool's
bind test and the bot's bind are seconds apart). On any failure the port is released and the
process, if one was started, is terminated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.bus.messages import BotSpec
from shared.freqai.live import ModelRuntime
from shared.logging import get_logger
from shared.sandbox.policy import Policy
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotConfig, BotFiles, CredentialOpener, render_config
from trading_gateway.bots.launcher import Launcher, LauncherError
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import BotPortConflict, BotProcess, BotStartError, ReadyInfo, bot_environment
from trading_gateway.bots.sandbox import BotSandboxing
from trading_gateway.bots.state import BotRecord, Desired, StateFile

log = get_logger(__name__)


@dataclass(frozen=True)
class LaunchedBot:
    process: BotProcess
    ready: ReadyInfo
    config: BotConfig
    port_attempts: int


def _base_record(state: StateFile | None, files: BotFiles, generation: int, desired: Desired) -> BotRecord:
    existing = state.get(files.bot_id) if state is not None else None
    if existing is None:
        return BotRecord(bot_id=files.bot_id, generation=generation, desired=desired, config_path=str(files.config))
    return existing.model_copy(update={"generation": generation, "desired": desired, "config_path": str(files.config)})


async def _start(
    files: BotFiles,
    config: BotConfig,
    executable: Path | None,
    env: dict[str, str],
    policy: Policy | None,
    launcher: Launcher | None,
    watchdog: bool,
) -> BotProcess:
    """Forked by ``launcher`` when there is one (and Freqtrade's own program is asked for); exec'd otherwise, or
    when the launcher can't (the reason logged)."""
    if launcher is not None and executable is None:
        try:
            return await BotProcess.fork(files, config, launcher, env=env, sandbox=policy, watchdog=watchdog)
        except LauncherError as exc:
            reason = str(exc)
            log.warning("bot launch through the fork launcher failed; exec'ing it", bot_id=files.bot_id, reason=reason)
    return BotProcess.spawn(files, config, executable=executable, env=env, sandbox=policy, watchdog=watchdog)


async def launch_bot(
    spec: BotSpec,
    files: BotFiles,
    pool: PortPool,
    *,
    simulator_url: str | None,
    start_timeout: float,
    process_throttle_secs: int = 5,
    initial_state: Literal["running", "paused", "stopped"] = "running",
    state: StateFile | None = None,
    generation: int = 0,
    desired: Desired = Desired.running,
    port_attempts: int = 3,
    executable: Path | None = None,
    freqai_model: ModelRuntime | None = None,
    sandbox: BotSandboxing | None = None,
    opener: CredentialOpener | None = None,
    launcher: Launcher | None = None,
    watchdog: bool = False,
) -> LaunchedBot:
    """Start ``spec`` as bot ``files.bot_id`` and wait until it is ready and proven to be ours.

    ``watchdog``: the bot's process ends itself when its lease file (``files.lease``, written by the gateway's lease
    keeper) is not renewed in time (:mod:`shared.watchdog`).

    :raises BotConfigError: the spec can't run, or may not run unsandboxed here (nothing was spawned).
    :raises NoFreePort: no port of the pool can be had.
    :raises BotStartError: the bot did not become ready (``BotExitedEarly``, ``BotStartTimeout``, or
        ``BotPortConflict`` after ``port_attempts`` ports); its process is gone, its port released,
        its record (when ``state`` is given) has no process, says why, and counts a crash.
    """
    attempt = 0
    while True:
        attempt += 1
        credentials = ApiCredentials.generate()
        port = pool.acquire(files.bot_id)
        try:
            config = render_config(
                spec,
                files,
                port=port,
                credentials=credentials,
                simulator_url=simulator_url,
                process_throttle_secs=process_throttle_secs,
                initial_state=initial_state,
                freqai_model=freqai_model,
                opener=opener,
            )
            files.write(config, spec.strategy_source)
            env = bot_environment()
            policy = (
                sandbox.prepare(files, config, spec, env, market_url=simulator_url, watchdog=watchdog)
                if sandbox
                else None
            )
            process = await _start(files, config, executable, env, policy, launcher, watchdog)
        except BaseException:
            pool.release(port)
            raise
        record = _base_record(state, files, generation, desired)
        if state is not None:
            state.put(
                record.with_process(
                    pid=process.pid,
                    create_time=process.create_time,
                    port=port,
                    credentials=credentials,
                    started_at=process.started_at,
                    freqtrade_version=None,
                    launcher=process.launcher,
                )
            )
        try:
            ready = await process.wait_ready(start_timeout)
        except BotStartError as exc:
            pool.release(port)
            retry = isinstance(exc, BotPortConflict) and attempt < port_attempts
            if state is not None:
                state.put(record.without_process(exit_code=exc.exit_code, error=exc.reason, crashed=not retry))
            if retry:
                log.warning("bot's port was taken; trying another", bot_id=files.bot_id, port=port, attempt=attempt)
                continue
            raise
        except BaseException:
            await process.terminate(grace=5.0)
            pool.release(port)
            if state is not None:
                state.put(record.without_process(error="start cancelled"))
            raise
        if state is not None:
            state.put(
                record.with_process(
                    pid=process.pid,
                    create_time=process.create_time,
                    port=port,
                    credentials=credentials,
                    started_at=process.started_at,
                    freqtrade_version=ready.freqtrade_version,
                    launcher=process.launcher,
                )
            )
        return LaunchedBot(process=process, ready=ready, config=config, port_attempts=attempt)
