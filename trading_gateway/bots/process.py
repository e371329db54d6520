"""One ``freqtrade trade`` process: spawn it, know when it is ready and that it is ours, stop it.

Decisions:

- A process is identified by its pid **and** its start time (``psutil``'s ``create_time``). A pid
  alone may belong to an unrelated program once our bot is gone; nothing here ever signals a
  process whose start time doesn't match, and a reaped child's pid is never signalled again.
  Signals go through a pidfd (``pidfd_open`` once, the start time checked after it is open): it names
  that process and no other, so a signal cannot reach a process that took the pid meanwhile (a forked
  bot is the launcher's child, an adopted one init's: the gateway does not see them exit). The group
  signal (``killpg``) is sent once the pidfd says the leader lives: the group's id is the leader's pid,
  which Linux gives no other process while the leader or any member of its group lives.
- Spawned with ``start_new_session=True`` (its own session and process group, pgid = pid), so a
  terminal's Ctrl-C never reaches it and stopping takes its whole group (FreqAI may start worker
  processes). No ``PR_SET_PDEATHSIG``: bots outlive a gateway that dies or is upgraded, and the
  next gateway adopts them.
- The bot gets a minimal environment (:func:`bot_environment`): it runs user strategy code, which
  must not read the gateway's secrets (database and Redis URLs, signing keys) from ``os.environ``.
  Dropping ``PYTEST_*`` matters too: Freqtrade sets up no logging at all when it sees ``PYTEST_VERSION``.
- stdout and stderr go to ``console.log`` (appended, with a header per spawn): the few lines printed
  before Freqtrade's logging is set up, and tracebacks. Freqtrade's log proper is ``bot.log`` (the
  config's ``log_config`` sends it to a rotating file only, so nothing is written twice).
- ``--db-url`` goes on the command line only when it holds no password (``ps`` shows arguments to
  every user); it is in the config either way.
- Ready means: ``/api/v1/ping`` answers, then an authenticated ``/show_config`` with this spawn's fresh
  credentials answers with ``bot_name`` equal to the bot id. A port taken by another program makes
  Freqtrade hang forever while the other program answers ``/ping``: refused credentials, another
  ``bot_name``, or Uvicorn's "address already in use" line in ``bot.log`` end the wait at once with
  :class:`BotPortConflict`, and our process is terminated. (``/ping`` is sent without credentials; the
  identity check does send them, possibly to a stranger on the port, but they belong to this spawn
  only and die with it.)
- Stop: REST ``stop`` (errors ignored: the bot may be hung), SIGTERM to the group, SIGKILL after the
  grace period, then SIGKILL for anything left in the group. Freqtrade exits with 130 on SIGTERM
  after 1-2.5 s; open trades stay in its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

import httpx
import psutil

from shared.files import open_append_nofollow, open_read_nofollow
from shared.launcher.protocol import read_exit
from shared.logging import get_logger
from shared.sandbox.policy import Policy, wrap
from trading_gateway.bots.client import DEFAULT_TIMEOUT, BotApiError, BotAuthRefused, FreqtradeClient
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.files import BotConfig, BotFiles
from trading_gateway.bots.launcher import Launcher

log = get_logger(__name__)

CREATE_TIME_TOLERANCE = 0.01  # seconds; psutil derives it from clock ticks since boot: stable per process
KILL_WAIT = 5.0  # seconds to wait for the kernel after SIGKILL
POLL = 0.1
CONSOLE_LOG_MAX_BYTES = 1024 * 1024
BIND_ERROR = "error while attempting to bind on address"
_ENV_KEEP = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)


def default_executable() -> Path:
    """The ``freqtrade`` script of the Python environment the gateway runs in."""
    return Path(sys.executable).with_name("freqtrade")


def bot_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a bot: locale, time zone, paths, TLS and proxy settings; nothing of ours."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in _ENV_KEEP or k.startswith("LC_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BotStartError(RuntimeError):
    """A bot did not become ready; ``reason`` says why, ``last_log_lines`` shows what it logged."""

    def __init__(
        self, bot_id: str, reason: str, *, exit_code: int | None = None, last_log_lines: list[str] | None = None
    ) -> None:
        super().__init__(f"bot {bot_id} did not start: {reason}")
        self.bot_id = bot_id
        self.reason = reason
        self.exit_code = exit_code
        self.last_log_lines = last_log_lines or []


class BotExitedEarly(BotStartError):
    """The process exited before its API answered (bad config, exchange unreachable, strategy error)."""


class BotStartTimeout(BotStartError):
    """The API did not answer within the start timeout (the process was terminated)."""


class BotPortConflict(BotStartError):
    """Another program holds the bot's port (the process was terminated); retry on another port."""


@dataclass(frozen=True)
class ReadyInfo:
    pid: int
    create_time: float
    freqtrade_version: str
    state: str
    started_at: datetime
    seconds: float  # from spawn to ready


@dataclass(frozen=True)
class StopResult:
    was_running: bool
    exit_code: int | None  # known only for a process this gateway spawned
    signal: Literal["none", "SIGTERM", "SIGKILL"]  # the strongest signal it took
    seconds: float
    rest_stopped: bool = False  # whether the REST ``stop`` was accepted first


def _tail(path: Path, n: int, since: int = 0, max_bytes: int = 256 * 1024) -> list[str]:
    """The last ``n`` lines of ``path`` after byte offset ``since`` (the whole file if it shrank)."""
    try:
        size = path.lstat().st_size
        with open_read_nofollow(path) as f:
            start = since if since <= size else 0
            start = max(start, size - max_bytes)
            f.seek(start)
            data = f.read()
    except OSError:  # missing, or ELOOP: the bot put a symlink there; never follow it
        return []
    lines = data.decode(errors="replace").splitlines()
    if start > since and lines:
        lines = lines[1:]  # probably cut in the middle
    return lines[-n:] if n > 0 else []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def freqtrade_argv(files: BotFiles, config: BotConfig, executable: Path | None) -> list[str]:
    """``freqtrade trade`` with the bot's config, folder, strategy and log: exec'd or forked alike."""
    exe = executable or default_executable()
    if config.bot_id != files.bot_id:
        raise ValueError(f"config of bot {config.bot_id} spawned with the files of bot {files.bot_id}")
    if not exe.exists():
        raise BotStartError(files.bot_id, f"the freqtrade program is not at {exe}")
    if not files.config.exists() or not files.strategy_file(config.strategy_class).exists():
        raise BotStartError(files.bot_id, "its config and strategy are not written (BotFiles.write)")
    argv = [str(exe), "trade", "--config", str(files.config), "--userdir", str(files.user_data)]
    argv += ["--strategy", config.strategy_class, "--strategy-path", str(files.strategies)]
    if urlsplit(config.db_url).password is None:
        argv += ["--db-url", config.db_url]
    return [*argv, "--logfile", str(files.log)]


@contextlib.contextmanager
def _console(files: BotFiles, started_at: datetime, how: str) -> Iterator[tuple[BinaryIO, int]]:
    """``console.log`` opened for the bot's stdout and stderr (rotated past 1 MiB, a header line per start), and
    its size after the header."""
    if _size(files.console_log) > CONSOLE_LOG_MAX_BYTES:
        files.console_log.replace(files.console_log.with_name(files.console_log.name + ".1"))
    with open_append_nofollow(files.console_log) as console:
        os.fchmod(console.fileno(), 0o600)
        console.write(f"--- freqfleet: {how} freqtrade at {started_at.isoformat()} ---\n".encode())
        console.flush()
        yield console, console.tell()


class BotProcess:
    """A Freqtrade process of one bot: spawned here (:meth:`spawn`, or :meth:`fork` through the launcher) or
    adopted (:meth:`attach`)."""

    def __init__(
        self,
        *,
        bot_id: str,
        files: BotFiles,
        port: int,
        credentials: ApiCredentials,
        pid: int,
        create_time: float,
        started_at: datetime,
        popen: subprocess.Popen[bytes] | None = None,
        launched_by: Literal["exec", "fork"] = "exec",
        exits: Path | None = None,
        log_offset: int = 0,
        console_offset: int = 0,
    ) -> None:
        self.bot_id = bot_id
        self.files = files
        self.port = port
        self.credentials = credentials
        self.pid = pid
        self.create_time = create_time
        self.started_at = started_at
        self._popen = popen
        self._launched_by = launched_by
        # Where the launcher that forked it records its exit code (an adopted forked bot's parent is still the
        # launcher of the gateway that started it), and the code once read there (it does not change).
        self._exits = exits
        self._recorded_exit: int | None = None
        self._spawned_monotonic = time.monotonic()
        self._log_offset = log_offset
        self._console_offset = console_offset
        self._log_scan = log_offset
        self._pidfd: int | None = None

    def __repr__(self) -> str:
        return f"BotProcess(bot_id={self.bot_id!r}, pid={self.pid}, port={self.port})"

    # ------------------------------------------------------------------ creation

    @classmethod
    def spawn(
        cls,
        files: BotFiles,
        config: BotConfig,
        *,
        executable: Path | None = None,
        env: Mapping[str, str] | None = None,
        sandbox: Policy | None = None,
        watchdog: bool = False,
    ) -> BotProcess:
        """Start ``freqtrade trade`` for a bot whose files are written; returns at once (see :meth:`wait_ready`).

        With ``sandbox``, the sandbox launcher applies it in the child before Freqtrade starts (same pid). With
        ``watchdog`` (and Freqtrade's own program), Freqtrade runs under the lease watchdog (:mod:`shared.watchdog`,
        reading ``files.lease``), in the same process.
        """
        argv = freqtrade_argv(files, config, executable)
        if watchdog and executable is None:
            argv = [sys.executable, "-I", "-m", "shared.watchdog", "--lease", str(files.lease), "--bot", files.bot_id,
                    "--", *argv]  # fmt: skip
        if sandbox is not None:
            argv = wrap(sandbox, argv)
        log_offset = _size(files.log)
        started_at = datetime.now(UTC)
        with _console(files, started_at, "spawning") as (console, console_offset):
            popen = subprocess.Popen(
                argv,
                cwd=files.folder,
                env=bot_environment() if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:  # defensive: an unreaped child stays readable, even as a zombie
            popen.wait(KILL_WAIT)
            raise BotExitedEarly(
                files.bot_id,
                "it exited at once",
                exit_code=popen.returncode,
                last_log_lines=_tail(files.console_log, 20),
            ) from None
        log.info("bot spawned", bot_id=files.bot_id, pid=popen.pid, port=config.port)
        return cls(
            bot_id=files.bot_id,
            files=files,
            port=config.port,
            credentials=config.credentials,
            pid=popen.pid,
            create_time=create_time,
            started_at=started_at,
            popen=popen,
            log_offset=log_offset,
            console_offset=console_offset,
        )

    @classmethod
    async def fork(
        cls,
        files: BotFiles,
        config: BotConfig,
        launcher: Launcher,
        *,
        env: Mapping[str, str] | None = None,
        sandbox: Policy | None = None,
        watchdog: bool = False,
    ) -> BotProcess:
        """Have ``launcher`` fork the bot (the same arguments as :meth:`spawn`, the same sandbox and watchdog, applied
        in the child before Freqtrade's entry point runs); returns once the child has applied them.

        :raises LauncherError: the launcher could not (the caller execs the bot instead).
        """
        argv = freqtrade_argv(files, config, None)
        log_offset = _size(files.log)
        started_at = datetime.now(UTC)
        with _console(files, started_at, "forking") as (console, console_offset):
            answer = await asyncio.to_thread(
                launcher.spawn,
                argv,
                cwd=files.folder,
                env=bot_environment() if env is None else env,
                policy=sandbox,
                console=console.fileno(),
                watchdog={"lease_file": str(files.lease), "bot_id": files.bot_id} if watchdog else None,
            )
        log.info("bot forked", bot_id=files.bot_id, pid=answer["pid"], port=config.port, launcher=launcher.pid)
        return cls(
            bot_id=files.bot_id,
            files=files,
            port=config.port,
            credentials=config.credentials,
            pid=int(answer["pid"]),
            create_time=float(answer["create_time"]),
            started_at=started_at,
            launched_by="fork",
            exits=launcher.exits,
            log_offset=log_offset,
            console_offset=console_offset,
        )

    @classmethod
    def attach(
        cls,
        *,
        files: BotFiles,
        port: int,
        credentials: ApiCredentials,
        pid: int,
        create_time: float,
        started_at: datetime | None = None,
        launched_by: Literal["exec", "fork"] | None = None,
        exits: Path | None = None,
    ) -> BotProcess:
        """A process this gateway did not spawn (adoption); check :meth:`is_alive` before trusting it. ``exits``:
        where its launcher records its exit code, for a forked one."""
        return cls(
            bot_id=files.bot_id,
            files=files,
            port=port,
            credentials=credentials,
            pid=pid,
            create_time=create_time,
            started_at=started_at or datetime.fromtimestamp(create_time, UTC),
            launched_by=launched_by or "exec",
            exits=exits,
        )

    def client(self, timeout: float | None = None) -> FreqtradeClient:
        """A new client of this bot's API (close it, or use it with ``async with``)."""
        t = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout, connect=min(2.0, timeout))
        return FreqtradeClient(self.port, self.credentials.username, self.credentials.password, timeout=t)

    # ------------------------------------------------------------------ liveness

    @property
    def spawned_here(self) -> bool:
        """Its exit code can be known: exec'd by this gateway process, or forked by a launcher (this gateway's, or
        the one of the gateway that started it, which records it)."""
        return self._popen is not None or self._exits is not None

    @property
    def launcher(self) -> Literal["exec", "fork"]:
        """How it started: exec'd, or forked by a launcher (for an adopted bot: as the gateway recorded it)."""
        return self._launched_by

    def _reaped(self) -> bool:
        """True once our own child has exited and been reaped (a forked one: by the launcher, which recorded it):
        its pid may now be someone else's."""
        if self._popen is not None:
            return self._popen.poll() is not None
        return self._exits is not None and self.exit_code is not None

    def _process(self) -> psutil.Process | None:
        """The process with our pid if it is ours (same start time), zombies included; else None."""
        if self._reaped():
            return None
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_TOLERANCE:
                return None
        except psutil.Error:
            return None
        return proc

    def _open_pidfd(self) -> int | None:
        """A pidfd of our process (opened once; None once it is gone, or the pid is someone else's)."""
        if self._pidfd is not None:
            return self._pidfd
        if self._reaped():
            return None
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # ESRCH: no such process
            return None
        # Checked after the open: if the process with our start time is there now, the fd names it.
        if self._process() is None:
            os.close(fd)
            return None
        self._pidfd = fd
        weakref.finalize(self, os.close, fd)
        return fd

    def _reap_if_our_child(self) -> None:
        if self._popen is not None:
            self._popen.poll()
            return
        if self._exits is not None:
            return  # a launcher's child: it reaps it
        with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
            os.waitpid(self.pid, os.WNOHANG)

    def is_alive(self) -> bool:
        """True while the bot's own process runs (a zombie, or a reused pid, is not our bot)."""
        proc = self._process()
        if proc is None:
            return False
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                self._reap_if_our_child()
                return False
        except psutil.Error:
            return False
        return True

    @property
    def exit_code(self) -> int | None:
        """The exit code once a process spawned here has exited and been reaped (None for adopted ones).

        A killed process counts as not alive a moment before it can be reaped (its threads are still
        exiting): :meth:`terminate` waits for that, a caller of :meth:`is_alive` may see None briefly.
        """
        if self._popen is not None:
            return self._popen.poll()
        if self._exits is not None and self._recorded_exit is None:
            self._recorded_exit = read_exit(self._exits, self.pid, self.create_time, CREATE_TIME_TOLERANCE)
        return self._recorded_exit

    # ------------------------------------------------------------------ logs

    def last_log_lines(self, n: int = 50) -> list[str]:
        """The last ``n`` lines Freqtrade logged since this spawn; its console output if it logged none."""
        lines = _tail(self.files.log, n, since=self._log_offset)
        return lines or _tail(self.files.console_log, n, since=self._console_offset)

    def _bind_error_logged(self) -> bool:
        lines = _tail(self.files.log, 200, since=self._log_scan)
        self._log_scan = _size(self.files.log)
        return any(BIND_ERROR in line for line in lines)

    # ------------------------------------------------------------------ readiness

    async def wait_ready(self, timeout: float) -> ReadyInfo:
        """Wait until the API answers and proves to be this bot's; else terminate it and raise.

        :raises BotExitedEarly: the process exited (``exit_code``, ``last_log_lines`` say more).
        :raises BotPortConflict: another program answers on the bot's port.
        :raises BotStartTimeout: no answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        async with self.client(timeout=2.0) as api:
            while True:
                if not self.is_alive():
                    await self._reaped_in(KILL_WAIT)
                    raise BotExitedEarly(
                        self.bot_id,
                        f"freqtrade exited with code {self.exit_code}" if self.spawned_here else "its process is gone",
                        exit_code=self.exit_code,
                        last_log_lines=self.last_log_lines(),
                    )
                if self._bind_error_logged():
                    await self._fail_start()
                    raise BotPortConflict(
                        self.bot_id,
                        f"port {self.port} is taken by another program (freqtrade logged: address already in use)",
                        last_log_lines=self.last_log_lines(),
                    )
                try:
                    if await api.ping():
                        break
                except BotApiError:
                    pass
                if time.monotonic() >= deadline:
                    await self._fail_start()
                    raise BotStartTimeout(
                        self.bot_id,
                        f"its REST API did not answer on port {self.port} within {timeout:g} s",
                        last_log_lines=self.last_log_lines(),
                    )
                await asyncio.sleep(POLL)
            # A bot that answers /ping may still be slow to answer more (starting among a hundred others on a busy
            # host): asked again until the deadline, rather than killed and started again from nothing.
            while True:
                try:
                    config = await api.show_config()
                    break
                except BotAuthRefused:
                    await self._fail_start()
                    raise BotPortConflict(
                        self.bot_id,
                        f"port {self.port} is answered by another program (it refused this bot's credentials)",
                        last_log_lines=self.last_log_lines(),
                    ) from None
                except BotApiError as exc:
                    if time.monotonic() >= deadline or not self.is_alive():
                        await self._fail_start()
                        raise BotStartError(
                            self.bot_id, f"show_config failed: {exc}", last_log_lines=self.last_log_lines()
                        ) from None
                    log.info("bot slow to answer show_config; asking again", bot_id=self.bot_id, error=str(exc))
                    await asyncio.sleep(POLL)
        if config.bot_name != self.bot_id:
            await self._fail_start()
            raise BotPortConflict(
                self.bot_id,
                f"port {self.port} is answered by another Freqtrade bot ({config.bot_name!r})",
                last_log_lines=self.last_log_lines(),
            )
        seconds = time.monotonic() - self._spawned_monotonic
        log.info("bot ready", bot_id=self.bot_id, pid=self.pid, port=self.port, seconds=round(seconds, 2))
        return ReadyInfo(
            pid=self.pid,
            create_time=self.create_time,
            freqtrade_version=config.version,
            state=config.state,
            started_at=self.started_at,
            seconds=seconds,
        )

    async def _fail_start(self) -> None:
        await self.terminate(grace=KILL_WAIT)

    # ------------------------------------------------------------------ stopping

    def _signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to our process group (or the process alone if it left its group); False if it's gone."""
        pidfd = self._open_pidfd()
        if pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(pidfd, 0)  # our process still lives (a zombie too): its pid is ours
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("not allowed to signal bot process", bot_id=self.bot_id, pid=self.pid)
            return False
        return True

    def _kill_leftovers(self) -> int:
        """SIGKILL processes left in the bot's process group once its leader is gone; how many.

        A leftover must be in the group whose id is our pid, have started after our process, and run
        in the bot's folder (a bot's helper processes inherit its working directory). That excludes
        everything of a process that reused our pid after we were gone, even one that made its own group.
        """
        if self._process() is None:
            try:
                psutil.Process(self.pid)
                return 0  # the pid belongs to an unrelated process now: leave its group alone
            except psutil.Error:
                pass
        folder = str(self.files.folder)
        killed = 0
        for proc in psutil.process_iter():
            if proc.pid == self.pid:
                continue
            try:
                if os.getpgid(proc.pid) != self.pid:
                    continue
                if proc.create_time() + CREATE_TIME_TOLERANCE < self.create_time or proc.cwd() != folder:
                    continue
                proc.kill()  # psutil checks the start time again
                killed += 1
            except (ProcessLookupError, psutil.Error):
                continue
        if killed:
            log.warning("killed processes left in a bot's group", bot_id=self.bot_id, count=killed)
        return killed

    async def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL)
        await self._reaped_in(KILL_WAIT)
        return True

    async def _reaped_in(self, timeout: float) -> None:
        """Wait for a child of ours that is no longer alive to be reaped (so its exit code is known).

        A dying multi-threaded process shows as a zombie while its threads still exit, and can be
        reaped only once they have.
        """
        deadline = time.monotonic() + timeout
        while self.spawned_here and time.monotonic() < deadline:
            if self.exit_code is not None:
                return
            await asyncio.sleep(0.02)

    async def terminate(self, grace: float) -> StopResult:
        """SIGTERM the bot's process group, SIGKILL after ``grace`` seconds; signals only a verified process."""
        t0 = time.monotonic()
        if not self.is_alive():
            self._kill_leftovers()
            return StopResult(False, self.exit_code, "none", time.monotonic() - t0)
        strongest: Literal["none", "SIGTERM", "SIGKILL"] = "none"
        if self._signal(signal.SIGTERM):
            strongest = "SIGTERM"
        if not await self._wait_gone(grace):
            log.warning("bot did not stop in time; killing it", bot_id=self.bot_id, pid=self.pid, grace=grace)
            if self._signal(signal.SIGKILL):
                strongest = "SIGKILL"
            if not await self._wait_gone(KILL_WAIT):
                raise RuntimeError(f"bot {self.bot_id} (pid {self.pid}) survived SIGKILL")
        self._kill_leftovers()
        seconds = time.monotonic() - t0
        log.info("bot process ended", bot_id=self.bot_id, pid=self.pid, exit_code=self.exit_code, signal=strongest)
        return StopResult(True, self.exit_code, strongest, seconds)

    async def stop(self, grace: float) -> StopResult:
        """REST ``stop`` (errors ignored), then :meth:`terminate`. Open trades stay in the bot's database."""
        t0 = time.monotonic()
        rest_stopped = False
        if self.is_alive():
            try:
                async with self.client(timeout=3.0) as api:
                    await api.stop()
                rest_stopped = True
            except BotApiError as exc:
                log.info("REST stop failed; signalling", bot_id=self.bot_id, error=str(exc))
        result = await self.terminate(grace)
        return StopResult(
            result.was_running, result.exit_code, result.signal, time.monotonic() - t0, rest_stopped=rest_stopped
        )
