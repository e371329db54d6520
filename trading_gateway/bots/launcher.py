"""The gateway's side of the fork launcher (``shared/launcher``): start it, have it fork a bot, read a bot's exit.

Up to two launchers per gateway process (``Launchers``), each started with the first bot of its kind when
``FREQFLEET_BOT_LAUNCHER=fork``: one for plain bots, one that has also imported FreqAI's libraries (LightGBM,
scikit-learn, XGBoost, datasieve) for FreqAI bots. A fleet without FreqAI never pays those imports (430 modules,
35 MiB and 0.2 s in the launcher here) nor carries them in its bots' address space.

A launcher's environment is the bots' (:func:`~trading_gateway.bots.process.bot_environment`: nothing of the
gateway's, since every forked bot inherits the launcher's memory and environment block) plus ``THREAD_ENV``. The
gateway and the launcher talk over a socket pair (no name a bot could connect to). A forked bot is supervised like
an exec'd one (pid and start time, signals through a pidfd, its process group); its exit code is what the
launcher, its parent, recorded.

When the gateway goes, the launcher serves no more and exits once its bots have; a new gateway starts a launcher
of its own and adopts the running bots as it adopts exec'd ones. A launcher that dies leaves its bots running
(their exit codes are then unknown); the next start makes a new one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.files import open_append_nofollow
from shared.launcher.protocol import receive, send
from shared.logging import get_logger
from shared.sandbox.policy import Policy

log = get_logger(__name__)

# Thread pools a library would start at import (see shared/launcher/server.py): one thread each, for the launcher
# (which must stay single-threaded to fork safely) and so for every bot it forks.
THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "NUMEXPR_MAX_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    # joblib probes at import whether it can make a POSIX semaphore (in /dev/shm). An exec'd bot imports it under
    # Landlock, fails, and runs joblib serially; the launcher imports it before any sandbox, would succeed, and
    # its sandboxed children would then fail to make one (FreqAI's dissimilarity index): serial, said up front.
    "JOBLIB_MULTIPROCESSING": "0",
}
START_TIMEOUT = 120.0  # seconds for its imports (about 3 s here; more on a loaded host)
SPAWN_TIMEOUT = 90.0  # seconds for a fork and the child's sandbox


def launcher_folder(gateway_data: Path) -> Path:
    """Where a gateway's launchers keep their log and the exit records of the bots they forked (the exits outlive
    a gateway and its launcher: the next gateway reads them for the bots it adopted)."""
    return gateway_data / "launcher"


class LauncherError(RuntimeError):
    """The launcher could not do it (not started, gone, refused); the bot is exec'd instead."""


class Launcher:
    def __init__(self, folder: Path, *, env: Mapping[str, str], freqai: bool = False) -> None:
        self.folder = folder
        self.exits = folder / "exits"
        self.log_path = folder / ("launcher-freqai.log" if freqai else "launcher.log")
        self.env = {**env, **THREAD_ENV}
        self.freqai = freqai
        self.hello: dict[str, Any] = {}
        self._popen: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time (asked from worker threads)

    def start(self) -> dict[str, Any]:
        """Start the launcher and wait for its hello (its imports done, one thread)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-I", "-m", "shared.launcher.server", "--control-fd", str(theirs.fileno())]
        argv += ["--exits", str(self.exits), *(["--freqai"] if self.freqai else [])]
        try:
            with open_append_nofollow(self.log_path) as out:
                os.fchmod(out.fileno(), 0o600)
                self._popen = subprocess.Popen(
                    argv,
                    cwd=self.folder,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,  # a terminal's Ctrl-C is not for it (nor for its bots)
                )
        finally:
            theirs.close()
        self._socket = ours
        self.hello = self._ask({"op": "hello"}, timeout=START_TIMEOUT)
        log.info(
            "bot launcher ready",
            pid=self.hello.get("pid"),
            freqtrade=self.hello.get("freqtrade"),
            modules=self.hello.get("modules"),
            freqai=self.hello.get("freqai"),
        )
        return self.hello

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None and self._socket is not None

    def _ask(self, message: dict[str, Any], *, fds: tuple[int, ...] = (), timeout: float) -> dict[str, Any]:
        with self._lock:
            if self._socket is None:
                raise LauncherError("the launcher is not running")
            try:
                self._socket.settimeout(timeout)
                send(self._socket, message, fds)
                answer, extra = receive(self._socket)
            except (OSError, ValueError) as exc:
                self._lost()
                raise LauncherError(f"the launcher did not answer: {exc}; {self.last_words()}") from None
            for fd in extra:
                os.close(fd)
            if answer is None:
                self._lost()
                raise LauncherError(f"the launcher is gone; {self.last_words()}")
            if not answer.get("ok"):
                raise LauncherError(f"the launcher refused ({answer.get('stage')}): {answer.get('error')}")
            return answer

    def _lost(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def last_words(self) -> str:
        code = None if self._popen is None else self._popen.poll()
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        return f"exit code {code}, its log: {' | '.join(tail) or '(empty)'}"

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        policy: Policy | None,
        console: int,
        watchdog: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Fork ``argv`` (``freqtrade trade ...``) in ``cwd`` with ``env``, sandboxed by ``policy``, its output to
        ``console``, with the lease watchdog (``{"lease_file", "bot_id"}``, :mod:`shared.watchdog`): returns once the
        child has applied its sandbox (``pid``, ``create_time``, ``sandbox``). Blocking: call it from a thread."""
        request = {
            "op": "spawn",
            "argv": argv,
            "cwd": str(cwd),
            "env": dict(env),
            "policy": None if policy is None else policy.to_json(),
            "watchdog": watchdog,
        }
        return self._ask(request, fds=(console,), timeout=SPAWN_TIMEOUT)

    def close(self, wait: float = 0.0) -> None:
        """No more requests: the launcher exits once its bots have (waited for up to ``wait`` seconds)."""
        with self._lock:
            self._lost()
        if self._popen is not None and wait > 0:
            try:
                self._popen.wait(wait)
            except subprocess.TimeoutExpired:
                log.info("bot launcher stays for its running bots", pid=self._popen.pid)


class LauncherSlot:
    """The gateway's launcher, started on the first bot's launch (a gateway with no bot pays nothing), started
    again when it died; after a launcher that would not start, bots are exec'd for ``RETRY_AFTER`` seconds."""

    RETRY_AFTER = 60.0

    def __init__(self, folder: Path, *, env: Mapping[str, str], freqai: bool = False) -> None:
        self.folder = folder
        self.env = dict(env)
        self.freqai = freqai
        self.current: Launcher | None = None
        self.failed_at: float | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Launcher | None:
        """A running launcher, or None (the caller execs the bot; why is in ``last_error`` and the log)."""
        async with self._lock:
            if self.current is not None and self.current.alive():
                return self.current
            if self.current is not None:
                log.warning("bot launcher gone; starting another", reason=self.current.last_words())
                self.current.close()
                self.current = None
            if self.failed_at is not None and time.monotonic() - self.failed_at < self.RETRY_AFTER:
                return None
            launcher = Launcher(self.folder, env=self.env, freqai=self.freqai)
            try:
                await asyncio.to_thread(launcher.start)
            except (LauncherError, OSError) as exc:
                launcher.close()
                self.failed_at, self.last_error = time.monotonic(), str(exc)
                log.warning("bot launcher did not start; bots are exec'd", error=self.last_error)
                return None
            self.current, self.failed_at, self.last_error = launcher, None, None
            return launcher

    async def close(self, wait: float = 0.0) -> None:
        async with self._lock:
            if self.current is not None:
                await asyncio.to_thread(self.current.close, wait)
                self.current = None


class Launchers:
    """The gateway's launchers: one for plain bots, one with FreqAI's libraries for FreqAI bots, each started with
    the first bot that needs it (their exit records in one folder: a pid is one process at a time)."""

    def __init__(self, folder: Path, *, env: Mapping[str, str]) -> None:
        self.slots = {freqai: LauncherSlot(folder, env=env, freqai=freqai) for freqai in (False, True)}

    async def get(self, *, freqai: bool) -> Launcher | None:
        """The running launcher for a bot with (or without) FreqAI, or None (the bot is exec'd)."""
        return await self.slots[freqai].get()

    async def close(self, wait: float = 0.0) -> None:
        await asyncio.gather(*(slot.close(wait) for slot in self.slots.values()))
