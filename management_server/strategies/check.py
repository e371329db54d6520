"""The deeper check of a strategy: a short Freqtrade backtest on the exchange simulator's candles.

The static checks (``validation.py``) read a strategy without running it. This check runs it, with the
real ``freqtrade`` installed beside this Python, in two subprocesses: ``freqtrade download-data`` fetches a
few days of candles from the exchange simulator, then ``freqtrade backtesting`` runs the strategy over
them. A strategy passes when Freqtrade loads it and backtests it to the end; one that makes no trades
still passes (its summary says so). It fails, with a readable reason and the last lines of Freqtrade's
log, when it cannot be imported, raises in a ``populate_*`` method, finds no data, runs out of time, ...

Freqtrade 2026.9 exports a backtest with ``--export trades --backtest-directory DIR`` as
``DIR/backtest-result-<time>.zip`` (the statistics as ``backtest-result-<time>.json`` inside, beside the
config, the strategy and feather files) and names that zip in ``DIR/.last_result.json``. The statistics
are read from there with the standard library; nothing of Freqtrade is imported into this process.

Freqtrade's exit code alone proves nothing: it exits 0 after a configuration error, and ``download-data``
exits 0 when it downloaded nothing. So each step is also judged by what it left behind (the candle files,
the export).

This is not a sandbox. The strategy's code runs with the rights of the calling process's user; its
environment is cut down to a few harmless variables (no ``FREQFLEET_*`` settings, no database or Redis
URL, no ``PYTEST_*``, in whose presence Freqtrade would set up no logging), and it runs in a temporary
folder that is removed afterwards.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from shared.exchange import SIMULATOR, offline_config, render_exchange_section
from shared.files import open_read_nofollow
from shared.processes import kill_group
from shared.sandbox.host import CHECK_UID_OFFSET, HostSandbox, exchange_ports, popen_sandboxed, stray_entry
from shared.sandbox.policy import Policy

DEFAULT_PAIRS: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
DRY_RUN_WALLET = 1000
LOG_TAIL_LINES = 20
MAX_EXPORT_BYTES = 256 * 1024 * 1024
NO_TRADES_NOTE = "The strategy loaded and ran to the end but made no trades in this period."
# Variables the freqtrade subprocesses keep; everything else (settings, credentials, pytest's markers) is dropped.
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")

_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_PAIR = re.compile(r"[A-Z0-9]{2,12}/[A-Z0-9]{2,12}")
_TIMEFRAME = re.compile(r"[1-9][0-9]{0,2}[smhdwM]")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - (?P<logger>[\w.]+) - (?P<level>[A-Z]+) - (?P<msg>.*)$")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Exit", "Interrupt", "Warning")
_COULD_NOT_IMPORT = re.compile(r"Could not import .* due to '(?P<why>.*)'$")
_VERSION = re.compile(r" - freqtrade - INFO - freqtrade (?P<version>\S+)$")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: a summary of the backtest when it passed, else a readable error."""

    passed: bool
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def reason(self) -> str | None:
        """The first line of the error: why the check failed, in one sentence."""
        return None if self.error is None else self.error.split("\n", 1)[0]


class _StepFailed(Exception):
    pass


def checked_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the freqtrade subprocesses get: only the allowed variables of ``environ``."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in ENV_ALLOWED if name in source}


def run_backtest_check(
    source: str,
    class_name: str,
    *,
    simulator_url: str,
    workdir: Path,
    pairs: Sequence[str] = DEFAULT_PAIRS,
    timeframe: str = "5m",
    days: int = 7,
    timeout: float = 300,
    progress: Callable[[str], None] | None = None,
    sandbox: HostSandbox | None = None,
) -> CheckResult:
    """Backtest ``class_name`` from ``source`` on ``days`` days of the simulator's ``timeframe`` candles.

    :param source: the strategy's Python source (one ``IStrategy`` subclass named ``class_name``).
    :param simulator_url: the exchange simulator's base URL (``http://127.0.0.1:8002``).
    :param workdir: where the check makes (and then removes) its temporary folder.
    :param pairs: the pairs to backtest, all quoted in one currency (the stake currency).
    :param timeout: seconds for the whole check; a freqtrade still running then is killed.
    :param progress: called with ``"download"``, ``"backtest"`` and ``"read"`` as the check gets there.
    :param sandbox: the host's sandbox (:func:`shared.sandbox.host.detect`): freqtrade runs under it, as the
        check's own uid when the worker is root. None runs it plain (tests of the check's logic only).
    :raises ValueError: for arguments that are not a class name, pairs, a timeframe, a number of days.
    """
    _validate_arguments(class_name, pairs, timeframe, days, timeout)
    started = time.monotonic()
    deadline = started + timeout
    freqtrade = Path(sys.executable).with_name("freqtrade")
    if not freqtrade.is_file():
        return CheckResult(False, error=f"The check could not run: there is no freqtrade beside {sys.executable}.")
    try:
        httpx.get(f"{simulator_url.rstrip('/')}/api/v3/ping", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        return CheckResult(
            False,
            error=f"The check could not run: the exchange simulator at {simulator_url} did not answer "
            f"({type(exc).__name__}: {exc}). This says nothing about the strategy: run the check again later.",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-", dir=workdir) as tmp:
        policy = None
        if sandbox is not None:
            policy = sandbox.policy(
                Path(tmp),
                env=checked_env(),
                uid=sandbox.uid_base + CHECK_UID_OFFSET,
                connect_ports=exchange_ports(simulator_url, SIMULATOR),
            )
        run = _Run(Path(tmp), freqtrade, deadline, timeout, policy)
        try:
            config = run.write_inputs(source, class_name, simulator_url, pairs, timeframe)
            _notify(progress, "download")
            run.download(config, pairs, timeframe, days)
            _notify(progress, "backtest")
            log = run.backtest(config, class_name)
            _notify(progress, "read")
            stats = run.read_export(class_name)
            try:
                summary = _summary(stats, log, round(time.monotonic() - started, 1))
            except (KeyError, TypeError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                raise _StepFailed(f"Freqtrade's backtest statistics could not be read ({why}).") from None
        except _StepFailed as exc:
            return CheckResult(False, error=str(exc))
        return CheckResult(True, summary=summary)


def _notify(progress: Callable[[str], None] | None, step: str) -> None:
    if progress is not None:
        progress(step)


def _validate_arguments(class_name: str, pairs: Sequence[str], timeframe: str, days: int, timeout: float) -> None:
    if not _CLASS_NAME.fullmatch(class_name):
        raise ValueError(f"not a class name: {class_name!r}")
    if isinstance(pairs, str) or not pairs:
        raise ValueError("at least one pair is needed, as a list")
    bad = [p for p in pairs if not _PAIR.fullmatch(p)]
    if bad:
        raise ValueError(f"not BASE/QUOTE pairs: {bad}")
    if len({p.split("/")[1] for p in pairs}) != 1:
        raise ValueError("all pairs must be quoted in one (the stake) currency")
    if not _TIMEFRAME.fullmatch(timeframe):
        raise ValueError(f"not a timeframe: {timeframe!r}")
    if not 1 <= days <= 365:
        raise ValueError("days must be between 1 and 365")
    if not timeout > 0:
        raise ValueError("timeout must be positive")


class _Run:
    """One check's temporary folder and its freqtrade subprocesses."""

    def __init__(self, home: Path, freqtrade: Path, deadline: float, timeout: float, policy: Policy | None) -> None:
        self.home = home
        self.policy = policy
        self.freqtrade = freqtrade
        self.deadline = deadline
        self.timeout = timeout
        self.userdir = home / "user_data"
        self.strategies = home / "strategies"
        self.results = home / "backtest_results"
        self.env = checked_env()

    def write_inputs(
        self, source: str, class_name: str, simulator_url: str, pairs: Sequence[str], timeframe: str
    ) -> Path:
        for folder in (self.userdir, self.strategies, self.results):
            folder.mkdir()
        (self.strategies / f"{class_name}.py").write_text(source, encoding="utf-8")
        config = {
            "bot_name": "freqfleet-check",
            "dry_run": True,
            "dry_run_wallet": DRY_RUN_WALLET,
            "trading_mode": "spot",
            "stake_currency": pairs[0].split("/")[1],
            "stake_amount": "unlimited",
            "max_open_trades": len(pairs),
            "timeframe": timeframe,
            "exchange": render_exchange_section(SIMULATOR, list(pairs), simulator_url=simulator_url),
            "pairlists": [{"method": "StaticPairList"}],
            "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
            "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
            # No api_server section (off by default; its schema wants every field even when disabled).
            **offline_config(),
        }
        path = self.home / "config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def download(self, config: Path, pairs: Sequence[str], timeframe: str, days: int) -> None:
        argv = ["download-data", "--config", str(config), "--userdir", str(self.userdir)]
        argv += ["--pairs", *pairs, "--timeframes", timeframe, "--days", str(days)]
        code, log = self._freqtrade("download-data", argv)
        if code != 0:
            raise self._failure("download-data", code, log, "downloading the candles failed")
        data = self.userdir / "data" / "binance"
        missing = [p for p in pairs if not any(data.glob(f"{p.replace('/', '_')}-{timeframe}.*"))]
        if missing:
            raise self._failure(
                "download-data", code, log, f"no {timeframe} candles came for {', '.join(missing)} from the simulator"
            )

    def backtest(self, config: Path, class_name: str) -> list[str]:
        argv = ["backtesting", "--config", str(config), "--userdir", str(self.userdir)]
        argv += ["--strategy", class_name, "--strategy-path", str(self.strategies)]
        argv += ["--export", "trades", "--backtest-directory", str(self.results), "--cache", "none"]
        code, log = self._freqtrade("backtesting", argv)
        if code != 0 or not (self.results / ".last_result.json").is_file():
            raise self._failure("backtesting", code, log, "the backtest did not finish")
        return log

    def read_export(self, class_name: str) -> dict[str, Any]:
        """The strategy's statistics from the zip that ``.last_result.json`` names."""
        try:
            with open_read_nofollow(self.results / ".last_result.json") as f:
                pointer = json.loads(f.read(MAX_EXPORT_BYTES))
            name = pointer["latest_backtest"]
            if not isinstance(name, str) or Path(name).name != name or not name.endswith(".zip"):
                raise ValueError(f"unexpected export name {name!r}")
            with open_read_nofollow(self.results / name) as raw, zipfile.ZipFile(raw) as archive:
                member = archive.getinfo(name.removesuffix(".zip") + ".json")
                if member.file_size > MAX_EXPORT_BYTES:
                    raise ValueError(f"the export's statistics are too large ({member.file_size} bytes)")
                stats = json.loads(archive.read(member))
            strategy = stats["strategy"][class_name]
            if not isinstance(strategy, dict):
                raise TypeError("the strategy's statistics are not an object")
            return strategy
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise _StepFailed(f"Freqtrade's backtest export could not be read ({type(exc).__name__}: {exc}).") from None

    # -- subprocesses ------------------------------------------------------------------------

    def _freqtrade(self, step: str, args: list[str]) -> tuple[int | None, list[str]]:
        """Run one freqtrade command; its exit code (None when it ran out of time) and its log lines."""
        logfile = self.home / f"{step}.log"
        output = self.home / f"{step}.output"
        argv = [str(self.freqtrade), *args, "--logfile", str(logfile)]
        with output.open("wb") as out:
            proc = popen_sandboxed(argv, home=self.home, policy=self.policy, env=self.env, stdout=out)
            try:
                code: int | None = proc.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = None
                kill_group(proc)
            except BaseException:  # a time limit or a shutdown of the caller: leave no freqtrade behind
                kill_group(proc)
                raise
        stray = stray_entry(self.home)
        if stray is not None:
            raise _StepFailed(
                f"freqtrade {step} left {stray.name}, a symlink or special file: the check reads nothing it made."
            )
        # The log file has whole lines; what it printed on its own (before its logging was set up) is the fallback.
        chosen = logfile if logfile.is_file() and logfile.stat().st_size > 0 else output
        with open_read_nofollow(chosen) as f:
            text = f.read().decode("utf-8", errors="replace")
        return code, self._clean(text.splitlines())

    def _clean(self, lines: list[str]) -> list[str]:
        """Without progress bars and blank lines, and without the server's folders in the paths."""
        home = str(self.home) + os.sep
        site = sysconfig.get_paths()["purelib"] + os.sep
        return [
            line.replace(home, "").replace(site, "")
            for line in lines
            if line.strip() and "━" not in line  # rich's progress bars
        ]

    def _failure(self, step: str, code: int | None, log: list[str], what: str) -> _StepFailed:
        if code is None:
            reason = f"freqtrade {step} did not finish within the check's {self.timeout:g} s and was stopped."
        else:
            found = _reason(log)
            reason = f"{what}: {found}" if found else f"{what} (freqtrade {step} exited with code {code})."
            reason = reason[0].upper() + reason[1:]
        tail = "\n".join(log[-LOG_TAIL_LINES:]) or "(freqtrade wrote nothing)"
        return _StepFailed(f"{reason}\n\nThe last lines of freqtrade {step}'s log:\n{tail}")


def _reason(log: list[str]) -> str | None:
    """Why freqtrade failed, from its log: the strategy's exception, an import error, or its last error."""
    errors = [m for line in log if (m := _LOG_PREFIX.match(line)) and m["level"] in ("ERROR", "CRITICAL")]
    last_error = errors[-1]["msg"].strip() if errors else None
    if any(line.startswith("Traceback (most recent call last)") for line in log):
        raised = _raised(log)
        if raised is not None:
            return raised
    if last_error is not None and last_error.startswith("Impossible to load Strategy"):
        causes = [m["why"] for line in log if (m := _COULD_NOT_IMPORT.search(line))]
        if causes:
            return f"the strategy could not be imported: {causes[-1]}"
        return "the strategy could not be loaded: " + last_error
    if last_error is not None:
        return last_error if last_error.endswith(".") else last_error + "."
    warnings = [m["msg"].strip() for line in log if (m := _LOG_PREFIX.match(line)) and m["level"] == "WARNING"]
    return warnings[-1] if warnings else None


def _raised(log: list[str]) -> str | None:
    """The exception that ended the last traceback, and where the strategy raised it."""
    start = max(i for i, line in enumerate(log) if line.startswith("Traceback (most recent call last)"))
    frames = [m for line in log[start:] if (m := _FRAME.match(line))]
    exception = next(
        (
            m
            for line in log[start + 1 :]
            if not line.startswith((" ", "\t"))
            and (m := _EXCEPTION_LINE.match(line))
            and (m["msg"] is not None or m["type"].endswith(_EXCEPTION_SUFFIXES))
        ),
        None,
    )
    if exception is None:
        return None
    raised = exception["type"] + (f": {exception['msg']}" if exception["msg"] else "")
    ours = [f for f in frames if f["file"].startswith("strategies" + os.sep)]
    if ours:
        return f"the strategy raised {raised} in {ours[-1]['func']} (line {ours[-1]['line']})"
    return f"freqtrade stopped with {raised}"


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _iso(milliseconds: Any) -> str:
    return datetime.fromtimestamp(int(milliseconds) / 1000, UTC).isoformat()


def _summary(stats: Mapping[str, Any], log: list[str], seconds: float) -> dict[str, Any]:
    versions = [m["version"] for line in log if (m := _VERSION.search(line))]
    summary: dict[str, Any] = {
        "trades": int(stats["total_trades"]),
        "wins": int(stats["wins"]),
        "losses": int(stats["losses"]),
        "draws": int(stats.get("draws", 0)),
        "profit_total_abs": _finite(stats["profit_total_abs"]),
        "profit_total": _finite(stats["profit_total"]),
        "max_drawdown": _finite(stats.get("max_drawdown_account", 0.0)),
        "stake_currency": str(stats.get("stake_currency", "")),
        "starting_balance": _finite(stats.get("starting_balance", DRY_RUN_WALLET)),
        "timerange": {"start": _iso(stats["backtest_start_ts"]), "end": _iso(stats["backtest_end_ts"])},
        "pairs": [str(p) for p in stats.get("pairlist", [])],
        "timeframe": str(stats["timeframe"]),
        "freqtrade_version": versions[-1] if versions else metadata.version("freqtrade"),
        "seconds": seconds,
    }
    if summary["trades"] == 0:
        summary["note"] = NO_TRADES_NOTE
    return summary
