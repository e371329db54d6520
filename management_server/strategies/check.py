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
folder that is removed afterwards. The subprocesses are run by :mod:`shared.freqtrade_steps`, as FreqAI's
training's are.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared.exchange import SIMULATOR_CCXT_NAME
from shared.files import open_read_nofollow
from shared.freqtrade_steps import (
    CLASS_NAME,
    DRY_RUN_WALLET,
    LOG_LINE,
    FreqtradeSteps,
    config_skeleton,
    freqtrade_beside_python,
    freqtrade_version,
    notify,
)
from shared.sandbox.host import CHECK_UID_OFFSET, HostSandbox

DEFAULT_PAIRS: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
LOG_TAIL_LINES = 20
MAX_EXPORT_BYTES = 256 * 1024 * 1024
NO_TRADES_NOTE = "The strategy loaded and ran to the end but made no trades in this period."

_PAIR = re.compile(r"[A-Z0-9]{2,12}/[A-Z0-9]{2,12}")
_TIMEFRAME = re.compile(r"[1-9][0-9]{0,2}[smhdwM]")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Exit", "Interrupt", "Warning")
_COULD_NOT_IMPORT = re.compile(r"Could not import .* due to '(?P<why>.*)'$")


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
    freqtrade = freqtrade_beside_python()
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
        run = _Run(
            Path(tmp),
            deadline,
            timeout,
            freqtrade=freqtrade,
            sandbox=sandbox,
            uid_offset=CHECK_UID_OFFSET,
            simulator_url=simulator_url,
        )
        try:
            config = run.write_inputs(source, class_name, pairs, timeframe)
            notify(progress, "download")
            run.download(config, pairs, timeframe, days)
            notify(progress, "backtest")
            log = run.backtest(config, class_name)
            notify(progress, "read")
            stats = run.read_export(class_name)
            try:
                summary = _summary(stats, log, round(time.monotonic() - started, 1))
            except (KeyError, TypeError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                raise _StepFailed(f"Freqtrade's backtest statistics could not be read ({why}).") from None
        except _StepFailed as exc:
            return CheckResult(False, error=str(exc))
        return CheckResult(True, summary=summary)


def _validate_arguments(class_name: str, pairs: Sequence[str], timeframe: str, days: int, timeout: float) -> None:
    if not CLASS_NAME.fullmatch(class_name):
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


class _Run(FreqtradeSteps):
    """One check's temporary folder and its freqtrade subprocesses."""

    hide_site_packages = True  # the strategy's owner sees the log's tail: no server folders in it

    @property
    def results(self) -> Path:
        return self.home / "backtest_results"

    def stray_failure(self, step: str, stray: Path) -> _StepFailed:
        return _StepFailed(
            f"freqtrade {step} left {stray.name}, a symlink or special file: the check reads nothing it made."
        )

    def write_inputs(self, source: str, class_name: str, pairs: Sequence[str], timeframe: str) -> Path:
        config = config_skeleton("freqfleet-check", pairs, timeframe, self.exchange_section(pairs))
        return self.prepare(class_name, source, config, self.results)

    def download(self, config: Path, pairs: Sequence[str], timeframe: str, days: int) -> None:
        argv = [*self.download_args(config, pairs, [timeframe]), "--days", str(days)]
        code, log = self.run_step("download-data", argv)
        if code != 0:
            raise self._failure("download-data", code, log, "downloading the candles failed")
        missing = [pair for pair, _ in self.missing_candles(pairs, [timeframe], SIMULATOR_CCXT_NAME)]
        if missing:
            raise self._failure(
                "download-data", code, log, f"no {timeframe} candles came for {', '.join(missing)} from the simulator"
            )

    def backtest(self, config: Path, class_name: str) -> list[str]:
        argv = self.backtest_args(config, class_name)
        argv += ["--export", "trades", "--backtest-directory", str(self.results), "--cache", "none"]
        code, log = self.run_step("backtesting", argv)
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
    errors = [m for line in log if (m := LOG_LINE.match(line)) and m["level"] in ("ERROR", "CRITICAL")]
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
    warnings = [m["msg"].strip() for line in log if (m := LOG_LINE.match(line)) and m["level"] == "WARNING"]
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
        "freqtrade_version": freqtrade_version(log),
        "seconds": seconds,
    }
    if summary["trades"] == 0:
        summary["note"] = NO_TRADES_NOTE
    return summary
