"""Re-adoption: a gateway that (re)starts takes over the bots still running from its state file.

For each recorded process the checks go from cheap and certain to expensive:

1. a process with the recorded pid exists and is not a zombie;
2. its start time equals the recorded one (else the pid was reused by another program);
3. its command line names the bot's ``config.json`` (a second guard against reuse);
4. its REST API answers our credentials with ``bot_name`` equal to the bot id.

1-3 prove the process is ours; 4 proves it works. A bot passing all four is **adopted**: nothing is
restarted, no second process is started, its port is marked held in the pool. One failing 1-3 is
**dead**: its record loses its process fields (and gains a crash time when it was meant to run),
and the caller restarts it as its desired state says. Nothing is ever signalled here, least of
all a process failing 2 or 3. One passing 1-3 but not 4 within ``api_timeout`` is **unresponsive**:
ours (so the caller may stop it with :meth:`BotProcess.stop`) but not answering; its port stays held.

:func:`find_orphans` lists Freqtrade processes running a config under our bots folder that no record
accounts for (a lost or corrupt state file); they are reported, never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.logging import get_logger
from trading_gateway.bots.client import BotApiError, BotAuthRefused
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.ports import PortPool
from trading_gateway.bots.process import CREATE_TIME_TOLERANCE, BotProcess
from trading_gateway.bots.state import BotRecord, Desired, StateFile

log = get_logger(__name__)

_NO_CREDENTIALS = ApiCredentials(username="", password="", jwt_secret="", ws_token="")


@dataclass(frozen=True)
class AdoptedBot:
    record: BotRecord
    process: BotProcess
    state: str  # Freqtrade's: running, paused, stopped


@dataclass(frozen=True)
class DeadBot:
    record: BotRecord  # as saved: no process fields any more
    reason: str

    @property
    def should_restart(self) -> bool:
        return self.record.desired in (Desired.running, Desired.paused)


@dataclass(frozen=True)
class UnresponsiveBot:
    record: BotRecord
    process: BotProcess
    reason: str


@dataclass(frozen=True)
class Orphan:
    pid: int
    create_time: float
    bot_id: str
    config_path: str


@dataclass
class AdoptionReport:
    adopted: list[AdoptedBot] = field(default_factory=list)
    dead: list[DeadBot] = field(default_factory=list)
    unresponsive: list[UnresponsiveBot] = field(default_factory=list)
    without_process: list[BotRecord] = field(default_factory=list)  # recorded with no process (stopped)
    orphans: list[Orphan] = field(default_factory=list)
    seconds: float = 0.0

    def to_restart(self) -> list[BotRecord]:
        """Dead bots whose desired state says they should run (paused bots run too)."""
        return [d.record for d in self.dead if d.should_restart]


def files_of(record: BotRecord) -> BotFiles:
    """The bot's folder, from the recorded config path (``<root>/<bot_id>/config.json``)."""
    config = Path(record.config_path)
    return BotFiles(config.parent.parent, record.bot_id)


def _why_not_ours(pid: int, create_time: float, config_path: str) -> str | None:
    """None when ``pid`` is still our bot's process; else why not (checks 1-3)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return f"pid {pid} now belongs to another process (started at {proc.create_time():.2f})"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited"
        cmdline = proc.cmdline()
    except psutil.NoSuchProcess:
        return f"process {pid} is gone"
    except psutil.Error as exc:
        return f"process {pid} can't be inspected ({type(exc).__name__})"
    if config_path not in cmdline:
        return f"pid {pid} runs something else (its command line does not name {config_path})"
    return None


async def _check_api(process: BotProcess, api_timeout: float) -> tuple[str | None, str | None]:
    """(Freqtrade state, None) when the API proves to be the bot's; (None, reason) otherwise."""
    deadline = time.monotonic() + api_timeout
    last = "no answer"
    async with process.client(timeout=2.0) as api:
        while True:
            try:
                config = await api.show_config()
            except BotAuthRefused:
                return None, f"port {process.port} is answered by another program (credentials refused)"
            except BotApiError as exc:
                last = str(exc)
            else:
                if config.bot_name == process.bot_id:
                    return config.state, None
                return None, f"port {process.port} is answered by another bot ({config.bot_name!r})"
            if time.monotonic() >= deadline or not process.is_alive():
                return None, f"its API did not answer within {api_timeout:g} s ({last})"
            await asyncio.sleep(0.2)


async def _adopt_one(
    record: BotRecord, api_timeout: float, exits: Path | None
) -> AdoptedBot | DeadBot | UnresponsiveBot | BotRecord:
    if record.pid is None or record.create_time is None:
        return record
    reason = _why_not_ours(record.pid, record.create_time, record.config_path)
    if reason is not None:
        crashed = record.desired in (Desired.running, Desired.paused)
        return DeadBot(record.without_process(error=f"found dead at adoption: {reason}", crashed=crashed), reason)
    credentials = record.credentials()
    process = BotProcess.attach(
        files=files_of(record),
        port=record.port or 0,
        credentials=credentials or _NO_CREDENTIALS,
        pid=record.pid,
        create_time=record.create_time,
        started_at=record.started_at,
        launched_by=record.launcher,
        exits=exits if record.launcher == "fork" else None,
    )
    if credentials is None or record.port is None:
        return UnresponsiveBot(record, process, "its port or API credentials are not recorded")
    state, problem = await _check_api(process, api_timeout)
    if state is None:
        if not process.is_alive():
            crashed = record.desired in (Desired.running, Desired.paused)
            why = f"it exited during adoption ({problem})"
            return DeadBot(record.without_process(error=why, crashed=crashed), why)
        return UnresponsiveBot(record, process, problem or "no answer")
    return AdoptedBot(record, process, state)


async def adopt(
    state: StateFile,
    pool: PortPool,
    *,
    bots_root: Path | None = None,
    api_timeout: float = 10.0,
    exits: Path | None = None,
) -> AdoptionReport:
    """Take over the recorded bots that still run; clean up the records of the dead ones.

    All bots are checked in parallel. The state file is updated for the dead ones; the pool holds
    the ports of the adopted and the unresponsive ones. With ``bots_root`` the report also lists
    orphans (Freqtrade processes under that folder that no record accounts for). ``exits``: where the
    launchers record the exit codes of the bots they forked (a forked bot's parent, still there when the
    gateway that started it is not, writes its exit code there).
    """
    t0 = time.monotonic()
    report = AdoptionReport()
    results = await asyncio.gather(*(_adopt_one(r, api_timeout, exits) for r in state.records()))
    for result in results:
        if isinstance(result, BotRecord):
            report.without_process.append(result)
        elif isinstance(result, AdoptedBot):
            try:
                pool.claim(result.process.port, result.record.bot_id)
            except ValueError as exc:  # two records on one port: the state file is inconsistent
                report.unresponsive.append(UnresponsiveBot(result.record, result.process, str(exc)))
                log.error("adopted bot's port is held by another bot", bot_id=result.record.bot_id, error=str(exc))
                continue
            report.adopted.append(result)
            log.info("bot adopted", bot_id=result.record.bot_id, pid=result.process.pid, state=result.state)
        elif isinstance(result, UnresponsiveBot):
            if result.process.port:
                with contextlib.suppress(ValueError):
                    pool.claim(result.process.port, result.record.bot_id)
            report.unresponsive.append(result)
            log.warning("bot process found but not answering", bot_id=result.record.bot_id, reason=result.reason)
        else:
            pool.release_bot(result.record.bot_id)
            state.put(result.record)
            report.dead.append(result)
            log.warning("bot found dead", bot_id=result.record.bot_id, reason=result.reason)
    if bots_root is not None:
        known = {b.process.pid for b in report.adopted} | {b.process.pid for b in report.unresponsive}
        report.orphans = [o for o in find_orphans(bots_root) if o.pid not in known]
        for orphan in report.orphans:
            log.warning("freqtrade process with no record", bot_id=orphan.bot_id, pid=orphan.pid)
    report.seconds = time.monotonic() - t0
    return report


def find_orphans(bots_root: Path, exclude_pids: Iterable[int] = ()) -> list[Orphan]:
    """Running ``freqtrade trade`` processes whose ``--config`` is ``<bots_root>/<bot_id>/config.json``."""
    root = Path(bots_root).absolute()
    skip = set(exclude_pids)
    found: list[Orphan] = []
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            cmdline = proc.cmdline()
            if "trade" not in cmdline or "--config" not in cmdline:
                continue
            config = Path(cmdline[cmdline.index("--config") + 1])
            if config.name != "config.json" or config.parent.parent != root:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(Orphan(proc.pid, proc.create_time(), config.parent.name, str(config)))
        except (psutil.Error, IndexError):
            continue
    return found
