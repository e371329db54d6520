"""Training FreqAI models offline: Freqtrade's own training, run as a backtest, against an exchange.

:func:`train_model` runs, in a work folder, ``freqtrade download-data`` (the candles of the training window,
from the exchange simulator or any ccxt exchange) and then ``freqtrade backtesting --freqaimodel
Freqfleet<Model>`` with ``save_backtest_models: true``. FreqAI trains one model per pair on the
``days`` before ``end`` and predicts the *holdout* window after ``end`` (``holdout_hours``; FreqAI needs one,
and it gives the out-of-sample backtest). Running FreqAI's own backtest is what the notes found most
reliable: the models are exactly what a live bot loads (same data kitchen, same pipelines, same files).

The model class is Freqtrade's (from :data:`shared.freqai.catalog.ALLOWED_MODELS`, LightGBMRegressor by
default) behind the Freqfleet mixin, which adds metrics on FreqAI's test split
(:mod:`shared.freqai.hotswap`) without changing the training.

- **Subprocesses** get an allow-listed environment (no ``FREQFLEET_*`` settings, no database or Redis URL,
  no ``PYTEST_*``, in whose presence Freqtrade sets up no logging), their own process group (killed as a
  whole on time-out or when the caller is interrupted), and a log file: :mod:`shared.freqtrade_steps` runs
  them, as it runs the strategy check's.
- **Progress** comes from the log as it is written: Freqtrade logs ``Training <pair>, i/n pairs`` and
  ``Done training <pair>``; the callback gets a :class:`TrainingProgress` after the download and after each pair.
- **Failure** is a :class:`TrainingFailed` whose message says why (the exception of a pair's training,
  Freqtrade's last error, a time-out) followed by the last lines of the log. Freqtrade's exit code alone
  proves nothing (FreqAI logs a failed pair and goes on), so a pair without a model file fails the run.
- **This is not a sandbox**: the strategy's code runs with the caller's rights. Run it only for strategies
  someone approved.

The result (:class:`TrainingResult`) points into ``workdir``; pack it (:meth:`TrainingResult.pack`) before
the caller removes the folder.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from shared import python_source
from shared.exchange import SIMULATOR
from shared.freqai.bundle import PackedBundle, pack_bundle
from shared.freqai.catalog import DEFAULT_MODEL, FREQAIMODELS_DIR, check_model, freqfleet_class
from shared.freqtrade_steps import CLASS_NAME, LOG_LINE, FreqtradeSteps, config_skeleton, freqtrade_version, notify
from shared.sandbox.host import TRAINING_UID_OFFSET, HostSandbox

IDENTIFIER = "freqfleet-train"
METRICS_FILE = "freqfleet_metrics.json"  # written by the mixin beside each model
LOG_TAIL_LINES = 30
MAX_METRICS_BYTES = 1024 * 1024

_PAIR = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
_TIMEFRAME = re.compile(r"([1-9][0-9]{0,2})([mhdw])")
_TF_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_TRAINING = re.compile(r"Training (?P<pair>\S+), (?P<i>\d+)/(?P<n>\d+) pairs")
_DONE = re.compile(r"Done training (?P<pair>\S+) \((?P<secs>[\d.]+) secs\)")
_PAIR_FAILED = re.compile(r"Training (?P<pair>\S+) raised exception (?P<exc>\w+)\. Message: (?P<msg>.*), skipping\.$")

# What a training run always sets in the freqai section (the rest is the caller's, over DEFAULT_FREQAI).
DEFAULT_FREQAI: dict[str, Any] = {
    "feature_parameters": {
        "include_corr_pairlist": [],
        "label_period_candles": 12,
        "include_shifted_candles": 0,
        "DI_threshold": 0,
        "indicator_periods_candles": [10, 20],
    },
    "data_split_parameters": {"test_size": 0.25, "random_state": 1, "shuffle": False},
    "model_training_parameters": {"n_estimators": 100},
}


class TrainingFailed(Exception):
    """The training did not produce a model for every pair; the message says why, then the log's last lines."""

    def __init__(self, message: str, log_tail: Sequence[str] = ()) -> None:
        tail = "\n".join(log_tail)
        super().__init__(f"{message}\n\nThe last lines of freqtrade's log:\n{tail}" if tail else message)
        self.reason = message
        self.log_tail = list(log_tail)


@dataclass(frozen=True)
class TrainingRequest:
    """What to train: a FreqAI strategy, its pairs and timeframe, the window, FreqAI's parameters.

    :param strategy_source: the strategy's Python source; it defines ``strategy_class`` (a FreqAI strategy:
        ``feature_engineering_*`` and ``set_freqai_targets``).
    :param end: the end of the training window (timezone-aware); the model learns from the ``days`` before it.
    :param holdout_hours: the window after ``end`` that FreqAI predicts (out of sample); it must have ended.
    :param freqai: the caller's ``freqai`` section (``feature_parameters``, ``data_split_parameters``,
        ``model_training_parameters``, ...), merged over :data:`DEFAULT_FREQAI`; the keys that decide what is
        trained and where (identifier, windows, saving, retraining) are set by the run.
    """

    strategy_source: str
    strategy_class: str
    pairs: Sequence[str]
    timeframe: str
    end: datetime
    days: int
    freqai: Mapping[str, Any] = field(default_factory=dict)
    freqai_model: str = DEFAULT_MODEL
    holdout_hours: float = 6.0

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass(frozen=True)
class TrainingProgress:
    """Where a training run is: ``step`` ``download`` / ``train`` / ``done``, and pairs trained of the total."""

    step: Literal["download", "train", "done"]
    pairs_done: int
    pairs_total: int
    pair: str | None = None

    @property
    def fraction(self) -> float:
        if self.step == "download":
            return 0.0
        if self.step == "done":
            return 1.0
        return self.pairs_done / self.pairs_total if self.pairs_total else 0.0


@dataclass(frozen=True)
class TrainingResult:
    """A finished training: the model folder (inside the work folder) and what describes it."""

    model_dir: Path
    freqai_model: str
    timeframe: str
    pairs: list[str]
    features: dict[str, list[str]]
    labels: list[str]
    trained_from: datetime
    trained_to: datetime
    metrics: dict[str, Any]
    freqai: dict[str, Any]
    freqtrade_version: str
    seconds: float
    log_tail: list[str]

    def pack(self, dest: Path) -> PackedBundle:
        """The live bundle of this training (see :func:`shared.freqai.bundle.pack_bundle`)."""
        return pack_bundle(
            self.model_dir,
            dest,
            freqai_model=self.freqai_model,
            timeframe=self.timeframe,
            freqai=self.freqai,
            trained_from=self.trained_from,
            trained_to=self.trained_to,
            metrics=self.metrics,
            pairs=self.pairs,
        )


ProgressCallback = Callable[[TrainingProgress], None]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def training_freqai_section(request: TrainingRequest) -> dict[str, Any]:
    """The ``freqai`` section a training run uses: the caller's over the defaults, the run's keys forced."""
    section = _merge(DEFAULT_FREQAI, json.loads(json.dumps(dict(request.freqai))))
    features = dict(section.get("feature_parameters") or {})
    features.setdefault("include_timeframes", [request.timeframe])
    section["feature_parameters"] = features
    section.update(
        {
            "enabled": True,
            "identifier": IDENTIFIER,
            "train_period_days": request.days,
            "backtest_period_days": request.holdout_hours / 24,
            "live_retrain_hours": 0,
            "save_backtest_models": True,
            "purge_old_models": 0,
            "continual_learning": False,
            "activate_tensorboard": False,
            "write_metrics_to_disk": False,
            "expiration_hours": 0,
        }
    )
    return section


def _timeframe_seconds(timeframe: str) -> int:
    match = _TIMEFRAME.fullmatch(timeframe)
    if match is None:
        raise ValueError(f"not a timeframe: {timeframe!r} (e.g. 5m, 1h)")
    return int(match[1]) * _TF_SECONDS[match[2]]


FEATURE_METHODS = ("feature_engineering_expand_all", "feature_engineering_expand_basic", "feature_engineering_standard")


def missing_freqai_parts(source: str, class_name: str) -> list[str]:
    """What the strategy lacks to be trained by FreqAI (read from its source, not run): its targets
    (``set_freqai_targets``), features (a ``feature_engineering_*`` method) and the ``self.freqai.start(...)`` call."""
    try:
        tree = python_source.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ["source that parses"]
    found = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if found is None:
        return [f"a class {class_name}"]
    methods = {n.name for n in found.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    starts = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "start"
        and isinstance(n.func.value, ast.Attribute)
        and n.func.value.attr == "freqai"
        for n in ast.walk(found)
    )
    missing = []
    if "set_freqai_targets" not in methods:
        missing.append("set_freqai_targets (its '&-' target columns)")
    if not methods.intersection(FEATURE_METHODS):
        missing.append("a feature_engineering_* method (its '%-' features)")
    if not starts:
        missing.append("a call of self.freqai.start(dataframe, metadata, self) in populate_indicators")
    return missing


def validate_request(request: TrainingRequest, now: datetime | None = None) -> None:
    """Raise ``ValueError`` with a readable reason when ``request`` can't be trained."""
    if not CLASS_NAME.fullmatch(request.strategy_class):
        raise ValueError(f"not a class name: {request.strategy_class!r}")
    if f"class {request.strategy_class}" not in request.strategy_source:
        raise ValueError(f"the strategy source does not define class {request.strategy_class}")
    pairs = list(request.pairs)
    if isinstance(request.pairs, str) or not pairs:
        raise ValueError("at least one pair is needed, as a list")
    bad = [p for p in pairs if not _PAIR.fullmatch(p)]
    if bad:
        raise ValueError(f"not BASE/QUOTE pairs: {bad}")
    if len(set(pairs)) != len(pairs):
        raise ValueError("a pair is listed twice")
    if len({p.split("/")[1] for p in pairs}) != 1:
        raise ValueError("all pairs must be quoted in one (the stake) currency")
    check_model(request.freqai_model)
    tf = _timeframe_seconds(request.timeframe)
    # These two reach download-data's command line: only pairs and timeframes, never an option.
    features = request.freqai.get("feature_parameters") or {}
    corr = features.get("include_corr_pairlist") or []
    if not isinstance(corr, list) or not all(isinstance(p, str) and _PAIR.fullmatch(p) for p in corr):
        raise ValueError(f"include_corr_pairlist must be a list of BASE/QUOTE pairs: {corr!r}"[:300])
    timeframes = features.get("include_timeframes") or []
    if not isinstance(timeframes, list) or not all(isinstance(t, str) and _TIMEFRAME.fullmatch(t) for t in timeframes):
        raise ValueError(f"include_timeframes must be a list of timeframes (5m, 1h): {timeframes!r}"[:300])
    if not isinstance(request.days, int) or not 1 <= request.days <= 365:
        raise ValueError("days must be a whole number from 1 to 365 (FreqAI trains on whole days)")
    if request.end.tzinfo is None:
        raise ValueError("end must carry a time zone (UTC)")
    if not (math.isfinite(request.holdout_hours) and request.holdout_hours * 3600 >= 2 * tf):
        raise ValueError("holdout_hours must cover at least two candles")
    if request.holdout_hours > 24 * 30:
        raise ValueError("holdout_hours must be at most 720 (30 days)")
    now = now or datetime.now(UTC)
    if request.end + timedelta(hours=request.holdout_hours) > now:
        latest = now - timedelta(hours=request.holdout_hours)
        raise ValueError(
            f"the training window must end {request.holdout_hours:g} h before now, so that FreqAI can predict the "
            f"holdout after it: end at {latest.strftime('%Y-%m-%d %H:%M')} UTC or earlier"
        )
    # Last: the checks above guard the command line, whatever the strategy is.
    if missing := missing_freqai_parts(request.strategy_source, request.strategy_class):
        raise ValueError(
            f"{request.strategy_class} is not a FreqAI strategy: it lacks {'; '.join(missing)} "
            "(examples/strategies/FreqaiExample.py has all three)"
        )


def train_model(
    request: TrainingRequest,
    *,
    workdir: Path,
    exchange: str = SIMULATOR,
    simulator_url: str | None = None,
    timeout: float = 1800,
    progress: ProgressCallback | None = None,
    freqtrade: Path | None = None,
    sandbox: HostSandbox | None = None,
) -> TrainingResult:
    """Train ``request`` in ``workdir`` (created; the caller removes it after packing the result).

    :param exchange: ``"simulator"`` (with ``simulator_url``) or a ccxt exchange id (public candles only).
    :param timeout: seconds for the download and the training together; a freqtrade still running then is killed.
    :param sandbox: the host's sandbox (:func:`shared.sandbox.host.detect`): freqtrade runs under it, as the
        training's own uid when the worker is root. None runs it plain.
    :raises ValueError: a request that can't be trained (the message says why; nothing ran).
    :raises TrainingFailed: the run did not give a model for every pair.
    """
    validate_request(request)
    started = time.monotonic()
    deadline = started + timeout
    run = _Run(
        workdir,
        deadline,
        timeout,
        freqtrade=freqtrade,
        sandbox=sandbox,
        uid_offset=TRAINING_UID_OFFSET,
        exchange=exchange,
        simulator_url=simulator_url,
    )
    if not run.freqtrade.is_file():
        raise TrainingFailed(f"the training could not run: there is no freqtrade at {run.freqtrade}")
    section = training_freqai_section(request)
    config = run.write_inputs(request, section)
    total = len(request.pairs)
    notify(progress, TrainingProgress("download", 0, total))
    run.download(config, request, section)
    notify(progress, TrainingProgress("train", 0, total))
    log = run.train(config, request, progress)
    result = run.collect(request, section, log, round(time.monotonic() - started, 1))
    notify(progress, TrainingProgress("done", total, total))
    return result


class _Run(FreqtradeSteps):
    """One training's folder and its freqtrade subprocesses."""

    def stray_failure(self, step: str, stray: Path) -> TrainingFailed:
        return TrainingFailed(f"freqtrade {step} left {stray.name}, a symlink or special file: nothing it made is read")

    @property
    def model_dir(self) -> Path:
        return self.userdir / "models" / IDENTIFIER

    def write_inputs(self, request: TrainingRequest, section: Mapping[str, Any]) -> Path:
        pairs = list(request.pairs)
        freqai = {
            "freqai": dict(section),
            "freqaimodel": freqfleet_class(request.freqai_model),
            "freqaimodel_path": str(FREQAIMODELS_DIR),
        }
        config = config_skeleton("freqfleet-training", pairs, request.timeframe, self.exchange_section(pairs), freqai)
        return self.prepare(request.strategy_class, request.strategy_source, config)

    def download(self, config: Path, request: TrainingRequest, section: Mapping[str, Any]) -> None:
        features = section.get("feature_parameters") or {}
        timeframes = sorted({request.timeframe, *features.get("include_timeframes", [])}, key=_timeframe_seconds)
        pairs = list(dict.fromkeys([*request.pairs, *features.get("include_corr_pairlist", [])]))
        longest = max(_timeframe_seconds(t) for t in timeframes)
        margin = timedelta(seconds=max(86400, 300 * longest))  # the strategy's start-up candles
        start = int((request.start - margin).timestamp())
        stop = int((request.end + timedelta(hours=request.holdout_hours)).timestamp())
        argv = [*self.download_args(config, pairs, timeframes), "--timerange", f"{start}-{stop}"]
        code, log = self.run_step("download-data", argv)
        if code is None:
            raise TrainingFailed(
                f"downloading the candles did not finish within {self.timeout:g} s", log[-LOG_TAIL_LINES:]
            )
        missing = [f"{p} {t}" for p, t in self.missing_candles(pairs, timeframes)]
        if code != 0 or missing:
            why = _last_error(log) or (f"no candles came for {', '.join(missing)}" if missing else f"exit code {code}")
            raise TrainingFailed(f"downloading the candles failed: {why}", log[-LOG_TAIL_LINES:])

    def train(self, config: Path, request: TrainingRequest, progress: ProgressCallback | None) -> list[str]:
        start = int(request.end.timestamp())
        stop = int((request.end + timedelta(hours=request.holdout_hours)).timestamp())
        argv = self.backtest_args(config, request.strategy_class)
        argv += ["--timerange", f"{start}-{stop}", "--export", "none", "--cache", "none"]
        total = len(request.pairs)
        done: list[str] = []

        def on_line(line: str) -> None:
            if (m := _DONE.search(line)) and m["pair"] not in done:
                done.append(m["pair"])
                notify(progress, TrainingProgress("train", len(done), total, m["pair"]))

        code, log = self.run_step("backtesting", argv, on_line=on_line)
        if code is None:
            raise TrainingFailed(
                f"the training did not finish within {self.timeout:g} s and was stopped "
                f"({len(done)} of {total} pairs trained)",
                log[-LOG_TAIL_LINES:],
            )
        if code != 0:
            raise TrainingFailed(
                f"the training failed: {_last_error(log) or f'exit code {code}'}", log[-LOG_TAIL_LINES:]
            )
        return log

    def collect(
        self, request: TrainingRequest, section: Mapping[str, Any], log: list[str], seconds: float
    ) -> TrainingResult:
        try:
            index: Any = json.loads((self.model_dir / "pair_dictionary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        failures = {m["pair"]: f"{m['exc']}: {m['msg']}" for line in log if (m := _PAIR_FAILED.search(line))}
        features: dict[str, list[str]] = {}
        labels: list[str] = []
        metrics: dict[str, Any] = {}
        missing = []
        for pair in request.pairs:
            info = index.get(pair) if isinstance(index, dict) else None
            folder = self.model_dir / Path(str(info.get("data_path", ""))).name if isinstance(info, dict) else None
            name = str(info.get("model_filename", "")) if isinstance(info, dict) else ""
            if folder is None or not name or not (folder / f"{name}_model.joblib").is_file():
                missing.append(pair)
                continue
            meta = json.loads((folder / f"{name}_metadata.json").read_text(encoding="utf-8"))
            features[pair] = [str(f) for f in meta.get("training_features_list", [])]
            labels = [str(label) for label in meta.get("label_list", [])]
            metrics_file = folder / METRICS_FILE
            if metrics_file.is_file() and metrics_file.stat().st_size <= MAX_METRICS_BYTES:
                metrics[pair] = json.loads(metrics_file.read_text(encoding="utf-8"))
        if missing:
            why = "; ".join(f"{p}: {failures[p]}" for p in missing if p in failures) or _last_error(log)
            detail = f" ({why})" if why else " (FreqAI found too little data for it?)"
            raise TrainingFailed(f"no model was trained for {', '.join(missing)}{detail}", log[-LOG_TAIL_LINES:])
        return TrainingResult(
            model_dir=self.model_dir,
            freqai_model=request.freqai_model,
            timeframe=request.timeframe,
            pairs=list(request.pairs),
            features=features,
            labels=labels,
            trained_from=request.start.astimezone(UTC),
            trained_to=request.end.astimezone(UTC),
            metrics=metrics,
            freqai=dict(section),
            freqtrade_version=freqtrade_version(log),
            seconds=seconds,
            log_tail=log[-LOG_TAIL_LINES:],
        )


def _last_error(log: Sequence[str]) -> str | None:
    """Freqtrade's last ERROR line, else the last line of a traceback."""
    errors = [m["msg"].strip() for line in log if (m := LOG_LINE.match(line)) and m["level"] in ("ERROR", "CRITICAL")]
    if errors:
        return errors[-1]
    plain = [line for line in log if not LOG_LINE.match(line) and not line.startswith((" ", "\t"))]
    if any(line.startswith("Traceback") for line in plain):
        return plain[-1].strip()
    return None
