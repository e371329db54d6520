"""The behaviour of the Freqfleet FreqAI model classes, in bots and in training runs.

Imported only inside Freqtrade processes (it imports Freqtrade): a bot that receives models and a training
run both load a ``Freqfleet<Model>`` class (``shared/freqai/freqaimodels/``), which is
``FreqfleetModelMixin`` in front of Freqtrade's own model class, e.g. ``LightGBMRegressor``.

**Training** (backtesting run mode): the model trains exactly as Freqtrade's; afterwards the mixin
predicts the test split (``data_split_parameters.test_size``) and writes metrics beside the model
(``freqfleet_metrics.json``: rows, features, and per label R², RMSE, MAE and the share of predictions with
the right sign for regressors, accuracy for classifiers). Training itself is untouched.

**Live** (dry-run or live run mode), a bot that receives models:

- **never trains**: Freqtrade trains live models in the thread that ``start_scanning`` starts; the mixin
  starts a watcher there instead, and ``extract_data_and_train_model`` does nothing;
- **swaps models without a new process**: the watcher checks the gateway's install marker
  (``freqfleet-model.json``, :class:`shared.freqai.live.InstallMarker`) twice a second. When a new install
  appears, it makes the strategy analyse every pair again at the next round of the bot's loop (it forgets
  the last candle it analysed; Freqtrade would otherwise wait for the next candle). In ``start_live`` of
  each pair, on Freqtrade's main thread, the pair's model, metadata and pipelines are dropped from FreqAI's
  data drawer and its ``pair_dict`` entry is set from the marker, so FreqAI loads the new files from disk.
  The pair's predictions so far stay when this FreqAI instance made them (FreqAI predicts the newest candle
  with the new model); a fresh instance (``reload_config`` for a model that changes the ``freqai`` section,
  or a start) drops the ``historic_predictions`` it read from disk unless an earlier process made them with
  this same install: FreqAI would serve the stored values for the candles they cover, the newest one
  included, in place of the new model's. The new model then predicts the whole frame, as a bot started
  with it would;
- **falls back when a model can't be used**: if loading or predicting with the new files raises, the pair
  gets back what it had in memory and predicts with it this same round; the install is recorded as failed;
- **acknowledges**: once every pair of the install (that the bot trades) has predicted with the new model,
  or once it failed, it writes ``freqfleet-ack.json`` (:class:`shared.freqai.live.Ack`: pid, install, the
  candle of each pair's first prediction, seconds taken, or the error). The gateway reports MODEL_LOADED
  (or MODEL_REJECTED) from it, so "loaded" means "predicting with it", not "files on disk".

The mixin relies on FreqAI internals of the pinned Freqtrade (``dd.pair_dict``, ``model_dictionary``,
``meta_data_dictionary``, ``model_return_values``, ``historic_predictions``; the strategy's private
``__last_candle_seen_per_pair``). Without the last one a swap waits for the next candle (logged).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from freqtrade.enums import RunMode  # type: ignore[import-untyped]
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen  # type: ignore[import-untyped]

from shared.freqai.live import (
    ACK_FILE,
    MARKER_FILE,
    Ack,
    FailedInstall,
    InstallMarker,
    LoadedModel,
    read_model,
    utcnow,
    write_model,
)

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
METRICS_FILE = "freqfleet_metrics.json"
_DRAWER_TABLES = (
    "pair_dict",
    "model_dictionary",
    "meta_data_dictionary",
    "model_return_values",
    "historic_predictions",
)
_HISTORY_TABLES = ("model_return_values", "historic_predictions")
_MISSING = object()


@dataclass
class _Swap:
    """An install being swapped in (or done)."""

    marker: InstallMarker
    noticed: float  # monotonic
    pairs: set[str] | None = None  # the install's pairs the bot trades (known at the first start_live)
    done: dict[str, datetime] = field(default_factory=dict)
    failed: str | None = None


def _candle_time(dataframe: pd.DataFrame) -> datetime:
    value = pd.Timestamp(dataframe["date"].iloc[-1])
    if value.tzinfo is None:
        value = value.tz_localize(UTC)
    return cast(datetime, value.to_pydatetime())


class FreqfleetModelMixin:
    """Put in front of a FreqAI model class: ``class FreqfleetX(FreqfleetModelMixin, X)``."""

    config: dict[str, Any]
    dd: Any
    dk: Any
    live: bool
    full_path: Path
    _threads: list[threading.Thread]
    _stop_event: threading.Event

    def __init__(self, config: dict[str, Any]) -> None:
        cast(Any, super()).__init__(config)
        self._ff_live = config.get("runmode") in (RunMode.DRY_RUN, RunMode.LIVE)
        self._ff_lock = threading.Lock()
        self._ff_swap: _Swap | None = None
        self._ff_loaded: LoadedModel | None = None
        self._ff_failed: FailedInstall | None = None
        self._ff_marker_stat: tuple[int, int, int] | None = None
        self._ff_strategy: Any = None
        self._ff_warned_no_reanalysis = False
        # The install whose predictions FreqAI just read from disk (``historic_predictions.pkl``), when an
        # earlier process acknowledged it; None when they may come from another model (a reload_config).
        self._ff_disk_history: uuid.UUID | None = None
        if self._ff_live:
            previous = read_model(Path(self.full_path) / ACK_FILE, Ack)
            if previous is not None and previous.pid != os.getpid() and previous.loaded is not None:
                self._ff_disk_history = previous.loaded.install_id
            self._ff_check_marker()  # the install made before this process started (or this reload_config)

    # ------------------------------------------------------------------------------ training

    def fit(self, data_dictionary: dict[str, Any], dk: Any, **kwargs: Any) -> Any:
        model = cast(Any, super()).fit(data_dictionary, dk, **kwargs)
        if not self._ff_live:
            try:
                metrics = _test_metrics(model, data_dictionary, dk)
                folder = Path(dk.data_path)
                folder.mkdir(parents=True, exist_ok=True)  # FreqAI creates it when it saves the model, after this
                (folder / METRICS_FILE).write_text(json.dumps(metrics, sort_keys=True))
            except Exception as exc:  # metrics are a bonus: never fail a training for them
                logger.warning("Freqfleet: test metrics of %s not computed: %s: %s", dk.pair, type(exc).__name__, exc)
        return model

    # ------------------------------------------------------------------------------ live: no training

    def start_scanning(self, *args: Any, **kwargs: Any) -> None:
        """Live: watch for installs instead of starting Freqtrade's training thread."""
        if not self._ff_live:
            cast(Any, super()).start_scanning(*args, **kwargs)
            return
        strategy = args[0] if args else kwargs.get("strategy")
        self._ff_strategy = strategy
        thread = threading.Thread(target=self._ff_watch, name="freqfleet-model-watcher", daemon=True)
        self._threads.append(thread)
        thread.start()
        logger.info("Freqfleet: this bot receives its models from the gateway and never trains")

    def extract_data_and_train_model(self, *args: Any, **kwargs: Any) -> None:
        if self._ff_live:
            logger.warning("Freqfleet: a receiving bot does not train; training request ignored")
            return
        cast(Any, super()).extract_data_and_train_model(*args, **kwargs)

    # ------------------------------------------------------------------------------ live: installs

    def _ff_marker_path(self) -> Path:
        return Path(self.full_path) / MARKER_FILE

    def _ff_check_marker(self) -> bool:
        """Read the marker if it changed; True when it names a new install (then it is the target)."""
        path = self._ff_marker_path()
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stat == self._ff_marker_stat:
            return False
        self._ff_marker_stat = stat
        marker = read_model(path, InstallMarker)
        if marker is None:
            logger.warning("Freqfleet: install marker %s is not readable; ignored", path)
            return False
        with self._ff_lock:
            current = self._ff_swap
            if current is not None and current.marker.install_id == marker.install_id:
                return False
            self._ff_swap = _Swap(marker=marker, noticed=time.monotonic())
        logger.info(
            "Freqfleet: model %s version %s (install %s) to load", marker.model_id, marker.version, marker.install_id
        )
        return True

    def _ff_watch(self) -> None:
        while not self._stop_event.wait(WATCH_INTERVAL):
            try:
                self._ff_check_marker()
                with self._ff_lock:
                    swap = self._ff_swap
                if swap is not None and swap.failed is None:
                    pending = (set(swap.marker.pairs) if swap.pairs is None else swap.pairs) - set(swap.done)
                    if pending:  # until each has predicted with the new model (a round may miss one)
                        self._ff_reanalyse(pending)
            except Exception:
                logger.exception("Freqfleet: model watcher step failed")

    def _ff_reanalyse(self, pairs: set[str]) -> None:
        """Make the strategy analyse ``pairs`` at the next round of the bot's loop, not only at the next candle."""
        seen = getattr(self._ff_strategy, "_IStrategy__last_candle_seen_per_pair", None)
        if isinstance(seen, dict):
            for pair in pairs:
                seen.pop(pair, None)
        elif not self._ff_warned_no_reanalysis:
            self._ff_warned_no_reanalysis = True
            logger.warning("Freqfleet: can't make the strategy analyse again; new models load at the next candle")

    def start_live(self, dataframe: pd.DataFrame, metadata: dict[str, Any], strategy: Any, dk: Any) -> Any:
        parent = cast(Any, super())
        if not self._ff_live:
            return parent.start_live(dataframe, metadata, strategy, dk)
        self._ff_strategy = strategy
        pair = str(metadata["pair"])
        with self._ff_lock:
            swap = self._ff_swap
        if swap is None or swap.failed is not None or pair in swap.done:
            return parent.start_live(dataframe, metadata, strategy, dk)
        if swap.pairs is None:
            whitelist = set(strategy.dp.current_whitelist())
            swap.pairs = {p for p in swap.marker.pairs if p in whitelist} or set(swap.marker.pairs)
        entry = swap.marker.pairs.get(pair)
        if entry is None or pair not in swap.pairs:
            return parent.start_live(dataframe, metadata, strategy, dk)
        saved = {name: getattr(self.dd, name).get(pair, _MISSING) for name in _DRAWER_TABLES}
        result: Any = None
        error: Exception | None = None
        # When this FreqAI instance has predicted the pair already, keep its predictions so far: FreqAI then
        # predicts the newest candle with the new model (do_predict and DI as usual). A fresh instance (after
        # reload_config, or at start) has only what it read from disk, and FreqAI takes those stored values for
        # every candle they cover, the newest included, instead of predicting: unless an earlier process made
        # them with this very install, start the pair afresh, as a new bot would (the new model predicts the
        # whole frame), then predict the newest candle again so it has a real outlier check. Keeping them can also
        # fail (other labels, say): then afresh too.
        fresh = pair not in self.dd.model_return_values
        ours = self._ff_disk_history == swap.marker.install_id
        for keep_history in (True, False) if not fresh or ours else (False,):
            self._ff_forget(pair, keep_history=keep_history)
            self.dd.pair_dict[pair] = {**entry.model_dump(), "extras": {}}
            try:
                result = parent.start_live(dataframe.copy(), metadata, strategy, dk)
                if pair not in self.dd.model_dictionary:
                    raise RuntimeError(f"FreqAI did not load the model of {pair} from {entry.data_path}")
                if not keep_history:
                    # Afresh, FreqAI fills do_predict and DI_values of the whole frame with zeros (its
                    # "initial historic predictions"), the newest candle included. Predict that candle once
                    # more the usual way, so it carries the new model's real outlier check, as any later one.
                    dk = FreqaiDataKitchen(self.config, self.live, pair)
                    self.dk = dk
                    result = parent.start_live(dataframe.copy(), metadata, strategy, dk)
            except Exception as exc:
                error = exc
                self._ff_restore(pair, saved)
                dk = FreqaiDataKitchen(self.config, self.live, pair)
                self.dk = dk
                continue
            error = None
            break
        if error is not None:
            swap.failed = f"{pair}: {type(error).__name__}: {error}"[:2000]
            logger.error(
                "Freqfleet: model %s could not be used for %s (%s); keeping the previous one",
                swap.marker.model_id,
                pair,
                swap.failed,
                exc_info=error,
            )
            self._ff_failed = FailedInstall(
                install_id=swap.marker.install_id,
                model_id=swap.marker.model_id,
                sha256=swap.marker.sha256,
                error=swap.failed,
                failed_at=utcnow(),
            )
            self._ff_write_ack()
            return parent.start_live(dataframe, metadata, strategy, dk)
        swap.done[pair] = _candle_time(dataframe)
        logger.info("Freqfleet: %s predicts with model %s version %s", pair, swap.marker.model_id, swap.marker.version)
        if swap.pairs <= set(swap.done):
            marker = swap.marker
            self._ff_loaded = LoadedModel(
                install_id=marker.install_id,
                model_id=marker.model_id,
                version=marker.version,
                sha256=marker.sha256,
                pairs=dict(swap.done),
                loaded_at=utcnow(),
                seconds=round(time.monotonic() - swap.noticed, 3),
            )
            self._ff_write_ack()
            logger.info(
                "Freqfleet: predicting with model %s version %s on %s",
                marker.model_id,
                marker.version,
                ", ".join(sorted(swap.done)),
            )
        return result

    def _ff_forget(self, pair: str, *, keep_history: bool) -> None:
        """Drop what FreqAI keeps of ``pair``'s model in memory (and its predictions unless ``keep_history``)."""
        for name in _DRAWER_TABLES:
            if keep_history and name in _HISTORY_TABLES:
                continue
            getattr(self.dd, name).pop(pair, None)

    def _ff_restore(self, pair: str, saved: Mapping[str, Any]) -> None:
        for name, value in saved.items():
            table = getattr(self.dd, name)
            table.pop(pair, None)
            if value is not _MISSING:
                table[pair] = value

    def _ff_write_ack(self) -> None:
        ack = Ack(pid=os.getpid(), loaded=self._ff_loaded, failed=self._ff_failed, updated_at=utcnow())
        try:
            write_model(Path(self.full_path) / ACK_FILE, ack)
        except OSError:
            logger.exception("Freqfleet: acknowledgement not written")


# ---------------------------------------------------------------------------------- metrics


def _finite(value: Any) -> float | None:
    number = float(value)
    return round(number, 8) if math.isfinite(number) else None


def _test_metrics(model: Any, data: Mapping[str, Any], dk: Any) -> dict[str, Any]:
    """Metrics of ``model`` on the test split FreqAI kept aside (in the labels' own units)."""
    features = data.get("test_features")
    labels = data.get("test_labels")
    metrics: dict[str, Any] = {
        "train_rows": len(data["train_features"]),
        "test_rows": 0 if labels is None else len(labels),
        "features": len(data["train_features"].columns),
    }
    if features is None or labels is None or len(labels) == 0:
        return metrics
    label_list = list(dk.label_list)
    raw = np.asarray(model.predict(features))
    if labels.dtypes.apply(pd.api.types.is_numeric_dtype).all():
        predicted = pd.DataFrame(raw.reshape(-1, len(label_list)), columns=label_list)
        predicted, _, _ = dk.label_pipeline.inverse_transform(predicted)
        actual, _, _ = dk.label_pipeline.inverse_transform(pd.DataFrame(labels.to_numpy(), columns=label_list))
        per_label = {}
        for label in label_list:
            p = predicted[label].to_numpy(dtype=float)
            t = actual[label].to_numpy(dtype=float)
            residual = float(((t - p) ** 2).sum())
            total = float(((t - t.mean()) ** 2).sum())
            per_label[label] = {
                "r2": _finite(1 - residual / total) if total > 0 else None,
                "rmse": _finite(math.sqrt(residual / len(t))),
                "mae": _finite(np.abs(t - p).mean()),
                "sign_accuracy": _finite((np.sign(p) == np.sign(t)).mean()),
            }
        metrics["labels"] = per_label
        return metrics
    truth = labels.to_numpy()[:, 0]
    guess = raw.reshape(len(truth), -1)[:, 0]
    if not isinstance(guess[0], str) and isinstance(truth[0], str):
        classes = np.array(sorted(set(data["train_labels"].to_numpy()[:, 0])))  # as a LabelEncoder numbers them
        guess = classes[guess.astype(int)]
    metrics["labels"] = {label_list[0]: {"accuracy": _finite((guess == truth).mean())}}
    return metrics
