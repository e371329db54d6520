"""Freqtrade commands run one after the other in a work folder: what the strategy check and FreqAI training share.

:class:`FreqtradeSteps` is one work folder (``config.json``, ``strategies/<Class>.py``, ``user_data/``) and the
``freqtrade`` commands run in it, each a *step* (``download-data``, ``backtesting``):

- **Environment**: the subprocesses get an allow-listed environment (:func:`freqtrade_env`: no ``FREQFLEET_*``
  settings, no database or Redis URL, no ``PYTEST_*``, in whose presence Freqtrade sets up no logging).
- **Sandbox**: with the host's sandbox (:func:`shared.sandbox.host.detect`) every step runs under the policy of the
  work folder, as the uid ``uid_base + uid_offset`` when the service is root; without one, plain.
- **Deadline**: every step runs in a process group of its own, killed as a whole at the deadline all the steps
  share (the step's exit code is then None) or when the caller is interrupted.
- **Log**: a step writes ``<step>.log`` (its ``--logfile``) and ``<step>.output`` (what it printed before its
  logging was set up); its lines are the log's (the output's when the log is empty), without blank lines,
  progress bars and the work folder's path. A callback may get the log's lines while the step runs.
- **Stray files**: a step that leaves a symlink or special file in the folder fails (nothing it made is read
  then); the subclass says with what (:meth:`FreqtradeSteps.stray_failure`).

This is not a sandbox by itself: without the host's, the strategy's code runs with the caller's rights.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from shared.exchange import SIMULATOR, offline_config, render_exchange_section
from shared.files import open_read_nofollow
from shared.processes import kill_group
from shared.sandbox.host import HostSandbox, exchange_ports, popen_sandboxed, stray_entry

# Variables the freqtrade subprocesses keep; everything else (settings, credentials, pytest's markers) is dropped.
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
DRY_RUN_WALLET = 1000
POLL = 0.25  # seconds between two reads of a step's log while a callback follows it
CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - (?P<logger>[\w.]+) - (?P<level>[A-Z]+) - (?P<msg>.*)$")
_VERSION = re.compile(r" - freqtrade - INFO - freqtrade (?P<version>\S+)$")

T = TypeVar("T")


def freqtrade_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the freqtrade subprocesses: only the allowed variables of ``environ`` (this process's)."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in ENV_ALLOWED if name in source}


def freqtrade_beside_python() -> Path:
    """The ``freqtrade`` installed beside this Python (it may not exist)."""
    return Path(sys.executable).with_name("freqtrade")


def freqtrade_version(log: Sequence[str]) -> str:
    """The version freqtrade logged at its start, else the installed one."""
    versions = [m["version"] for line in log if (m := _VERSION.search(line))]
    return versions[-1] if versions else metadata.version("freqtrade")


def notify(progress: Callable[[T], None] | None, state: T) -> None:
    """Tell ``progress`` (when there is one) where a run is."""
    if progress is not None:
        progress(state)


def config_skeleton(
    bot_name: str,
    pairs: Sequence[str],
    timeframe: str,
    exchange: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A dry-run spot config trading ``pairs`` (all quoted in the stake currency) on ``exchange`` (the section
    :func:`shared.exchange.render_exchange_section` gives), with ``extra`` top-level keys, offline."""
    return {
        "bot_name": bot_name,
        "dry_run": True,
        "dry_run_wallet": DRY_RUN_WALLET,
        "trading_mode": "spot",
        "stake_currency": pairs[0].split("/")[1],
        "stake_amount": "unlimited",
        "max_open_trades": len(pairs),
        "timeframe": timeframe,
        "exchange": dict(exchange),
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        # No api_server section (off by default; its schema wants every field even when disabled).
        **(extra or {}),
        **offline_config(),
    }


class FreqtradeSteps(ABC):
    """One work folder and the freqtrade commands run in it (see the module's docstring).

    :param home: the work folder (created by :meth:`prepare` when missing).
    :param deadline: the :func:`time.monotonic` moment at which a step still running is killed.
    :param timeout: the seconds that deadline stands for (for the messages of a subclass).
    :param freqtrade: the ``freqtrade`` program; None: the one beside this Python.
    :param sandbox: the host's sandbox; None runs freqtrade plain.
    :param uid_offset: the sandboxed uid's offset from the sandbox's ``uid_base``.
    :param exchange: the exchange the steps reach (``"simulator"`` at ``simulator_url``, or a ccxt id): under the
        sandbox, only its TCP ports can be connected to.
    """

    hide_site_packages: ClassVar[bool] = False  # also cut Python's site-packages folder out of the log's paths

    def __init__(
        self,
        home: Path,
        deadline: float,
        timeout: float,
        *,
        freqtrade: Path | None = None,
        sandbox: HostSandbox | None = None,
        uid_offset: int = 0,
        exchange: str = SIMULATOR,
        simulator_url: str | None = None,
    ) -> None:
        self.home = home
        self.freqtrade = freqtrade or freqtrade_beside_python()
        self.deadline = deadline
        self.timeout = timeout
        self.userdir = home / "user_data"
        self.strategies = home / "strategies"
        self.env = freqtrade_env()
        self.exchange = exchange
        self.simulator_url = simulator_url
        self.policy = None
        if sandbox is not None:
            ports = exchange_ports(simulator_url, exchange)
            self.policy = sandbox.policy(home, env=self.env, uid=sandbox.uid_base + uid_offset, connect_ports=ports)

    @abstractmethod
    def stray_failure(self, step: str, stray: Path) -> Exception:
        """What :meth:`run_step` raises when ``freqtrade step`` left ``stray``, a symlink or special file."""

    # -- inputs and arguments -------------------------------------------------------------------------

    def prepare(self, class_name: str, source: str, config: Mapping[str, Any], *folders: Path) -> Path:
        """Make the folders (the work folder, ``user_data``, ``strategies`` and ``folders``), write the strategy
        as ``strategies/<class_name>.py`` and ``config``; the config's path."""
        for folder in (self.home, self.userdir, self.strategies, *folders):
            folder.mkdir(parents=True, exist_ok=True)
        (self.strategies / f"{class_name}.py").write_text(source, encoding="utf-8")
        path = self.home / "config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def exchange_section(self, pairs: Sequence[str]) -> dict[str, Any]:
        """The config's ``exchange`` section: ``pairs`` on the steps' exchange."""
        url = self.simulator_url if self.exchange == SIMULATOR else None
        return render_exchange_section(self.exchange, list(pairs), simulator_url=url)

    def download_args(self, config: Path, pairs: Sequence[str], timeframes: Sequence[str]) -> list[str]:
        """``download-data`` of ``pairs`` in ``timeframes`` into ``user_data`` (the caller adds the period)."""
        return [*self._command("download-data", config), "--pairs", *pairs, "--timeframes", *timeframes]

    def backtest_args(self, config: Path, class_name: str) -> list[str]:
        """``backtesting`` of the strategy ``class_name`` (the caller adds the period and the export)."""
        strategy = ["--strategy", class_name, "--strategy-path", str(self.strategies)]
        return [*self._command("backtesting", config), *strategy]

    def _command(self, command: str, config: Path) -> list[str]:
        return [command, "--config", str(config), "--userdir", str(self.userdir)]

    def missing_candles(
        self, pairs: Sequence[str], timeframes: Sequence[str], exchange: str = "*"
    ) -> list[tuple[str, str]]:
        """The pairs and timeframes ``download-data`` left no candle file of in ``user_data/data/<exchange>/``."""
        return [
            (pair, timeframe)
            for pair in pairs
            for timeframe in timeframes
            if not any(self.userdir.glob(f"data/{exchange}/{pair.replace('/', '_')}-{timeframe}.*"))
        ]

    # -- subprocesses ---------------------------------------------------------------------------------

    def run_step(
        self, step: str, args: list[str], on_line: Callable[[str], None] | None = None
    ) -> tuple[int | None, list[str]]:
        """Run ``freqtrade *args`` as ``step``; its exit code (None when it ran out of time) and its log lines.

        ``on_line`` gets each line of the step's log as it is written (read every :data:`POLL` seconds).
        """
        logfile = self.home / f"{step}.log"
        output = self.home / f"{step}.output"
        argv = [str(self.freqtrade), *args, "--logfile", str(logfile)]
        follow = _LogFollower(logfile, on_line)
        with output.open("wb") as out:
            proc = popen_sandboxed(argv, home=self.home, policy=self.policy, env=self.env, stdout=out)
            code: int | None = None
            try:
                while True:
                    # Without a callback to feed, the wait is one, up to the deadline.
                    wait = POLL if on_line is not None else max(self.deadline - time.monotonic(), 0.1)
                    try:
                        code = proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        follow()
                        if time.monotonic() >= self.deadline:
                            kill_group(proc)
                            code = None
                            break
            except BaseException:  # a time limit or a shutdown of the caller: leave no freqtrade behind
                kill_group(proc)
                raise
        stray = stray_entry(self.home)
        if stray is not None:
            raise self.stray_failure(step, stray)
        follow()
        # The log file has whole lines; what it printed on its own (before its logging was set up) is the fallback.
        chosen = logfile if logfile.is_file() and logfile.stat().st_size > 0 else output
        with open_read_nofollow(chosen) as f:
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        return code, self.clean(lines)

    def clean(self, lines: list[str]) -> list[str]:
        """Without progress bars and blank lines, and without the work folder (and, when :attr:`hide_site_packages`,
        Python's site-packages folder) in the paths."""
        hidden = [str(self.home) + os.sep]
        if self.hide_site_packages:
            hidden.append(sysconfig.get_paths()["purelib"] + os.sep)
        cleaned = []
        for line in lines:
            if line.strip() and "━" not in line:  # rich's progress bars
                for prefix in hidden:
                    line = line.replace(prefix, "")
                cleaned.append(line)
        return cleaned


class _LogFollower:
    """Gives the whole lines a growing log file gained since the last call to a callback (none: does nothing)."""

    def __init__(self, path: Path, on_line: Callable[[str], None] | None) -> None:
        self.path = path
        self.on_line = on_line
        self.offset = 0
        self.pending = b""

    def __call__(self) -> None:
        if self.on_line is None:
            return
        try:
            with open_read_nofollow(self.path) as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:  # not there yet, or not a regular file (never followed)
            return
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", errors="replace"))
