"""Two small FreqAI models, trained for real once per test session on the exchange simulator, and packed.

Model A learns the two days before six hours ago, model B the two days before two days ago: the same
strategy (``examples/strategies/FreqaiExample.py``), the same features, different models. Both train at once
(two freqtrade processes), in about 15 s. The simulator's prices are a pure function of its seed, so any
simulator process of the suite gives the same candles: the first test that needs a model trains it, later
ones (in any package, in any pytest-xdist worker of the run) reuse it: a training costs seconds of CPU that the
other worker's real-process tests are waiting for.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import io
import json
import os
import pickle
import tarfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zstandard

from shared.bus.messages import BotSpec
from shared.freqai.bundle import PackedBundle, pack_bundle
from shared.freqai.training import TrainingProgress, TrainingRequest, TrainingResult, train_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "strategies"
FREQAI_STRATEGY = (EXAMPLES / "FreqaiExample.py").read_text()
FREQAI_CLASS = "FreqaiExample"
PAIRS = ("BTC/USDT", "ETH/USDT")
TIMEFRAME = "5m"
FREQAI: dict[str, Any] = {
    "feature_parameters": {"DI_threshold": 0.9, "indicator_periods_candles": [10, 20], "label_period_candles": 12},
    "model_training_parameters": {"n_estimators": 50},
}


@dataclass(frozen=True)
class TrainedModel:
    result: TrainingResult
    packed: PackedBundle
    progress: list[TrainingProgress]

    @property
    def sha256(self) -> str:
        return self.packed.sha256

    @property
    def size(self) -> int:
        return self.packed.size

    @property
    def compressed(self) -> bytes:
        return self.packed.path.read_bytes()

    def tar(self) -> bytes:
        """The uncompressed bundle (what is signed)."""
        return zstandard.ZstdDecompressor().decompressobj().decompress(self.compressed)


class TrainedModels:
    """Models A (trained on the last days) and B (the same, on days before), each trained when first asked for in
    the session (a test that needs one pays for one), then the same one."""

    def __init__(self, folder: Path, simulator_url: str) -> None:
        self.folder = folder
        self.simulator_url = simulator_url

    @property
    def a(self) -> TrainedModel:
        return self._model("a")

    @property
    def b(self) -> TrainedModel:
        return self._model("b")

    def both(self) -> TrainedModels:
        """Both models trained now, side by side (a fixture's work: a model first asked for inside an async test
        would be trained on its event loop, stalling the servers the test runs on it)."""
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(self._model, ("a", "b")))
        return self

    def _model(self, name: str) -> TrainedModel:
        with _locks[name]:  # one lock per model: both() trains the two side by side
            if name not in _cache:
                _cache[name] = self._shared(name)
            return _cache[name]

    def _shared(self, name: str) -> TrainedModel:
        """The model another worker of this run trained, or trained now (the others wait for it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        saved = self.folder / f"{name}.pickle"
        with (self.folder / f"{name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if saved.is_file():
                model: TrainedModel = pickle.loads(saved.read_bytes())  # noqa: S301 (this run wrote it)
                return model
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            end = hour - timedelta(hours=6) if name == "a" else hour - timedelta(days=2)
            model = _train(self.folder, name, request(end), self.simulator_url)
            partial = saved.with_suffix(".partial")
            partial.write_bytes(pickle.dumps(model))
            partial.replace(saved)
            return model


_cache: dict[str, TrainedModel] = {}
_locks = {"a": threading.Lock(), "b": threading.Lock()}


def request(end: datetime, days: int = 2) -> TrainingRequest:
    return TrainingRequest(
        strategy_source=FREQAI_STRATEGY,
        strategy_class=FREQAI_CLASS,
        pairs=list(PAIRS),
        timeframe=TIMEFRAME,
        end=end,
        days=days,
        freqai=FREQAI,
    )


def _train(folder: Path, name: str, req: TrainingRequest, simulator_url: str) -> TrainedModel:
    progress: list[TrainingProgress] = []
    result = train_model(req, workdir=folder / name, simulator_url=simulator_url, timeout=240, progress=progress.append)
    packed = result.pack(folder / f"{name}.tar.zst")
    return TrainedModel(result=result, packed=packed, progress=progress)


def trained_models(tmp_path_factory: pytest.TempPathFactory, simulator_url: str) -> TrainedModels:
    """Models A and B, each trained at its first use in the run (by whichever worker needs it first), then the
    same ones, from a folder every pytest-xdist worker of the run shares (the parent of the workers' own)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return TrainedModels(shared / "freqai-models", simulator_url)


def freqai_spec(pairs: tuple[str, ...] = PAIRS, **overrides: Any) -> BotSpec:
    """A FreqAI bot of the example strategy (what the models were trained with)."""
    fields: dict[str, Any] = {
        "name": "freqai bot",
        "strategy_class": FREQAI_CLASS,
        "strategy_source": FREQAI_STRATEGY,
        "pairs": list(pairs),
        "timeframe": TIMEFRAME,
        "stake_currency": "USDT",
        "stake_amount": Decimal(100),
        "max_open_trades": len(pairs),
        "dry_run_wallet": Decimal(10_000),
        "freqai": FREQAI,
    }
    return BotSpec(**(fields | overrides))


# ------------------------------------------------------------------------------ model folders without Freqtrade

TS = 1767484800
FROM = datetime(2026, 1, 1, tzinfo=UTC)
TO = datetime(2026, 1, 3, tzinfo=UTC)


def fake_model_dir(root: Path, pairs: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"), payload: int = 20_000) -> Path:
    """``user_data/models/<id>/`` as FreqAI leaves it after training (the pickles are random bytes here)."""
    folder = root / "models" / "train"
    index = {}
    for pair in pairs:
        base = pair.split("/")[0]
        sub = folder / f"sub-train-{base}_{TS}"
        sub.mkdir(parents=True)
        name = f"cb_{base.lower()}_{TS}"
        features = [f"%-rsi-period_10_{pair}_5m", "%-hour_of_day"]
        (sub / f"{name}_metadata.json").write_text(
            json.dumps({"training_features_list": features, "label_list": ["&-s_close"], "data_path": str(sub)})
        )
        for kind in (
            "model.joblib",
            "feature_pipeline.pkl",
            "label_pipeline.pkl",
            "trained_df.pkl",
            "trained_dates_df.pkl",
        ):
            (sub / f"{name}_{kind}").write_bytes(os.urandom(payload))
        index[pair] = {
            "model_filename": name,
            "trained_timestamp": TS,
            "data_path": f"user_data/models/train/{sub.name}",
        }
    (folder / "pair_dictionary.json").write_text(json.dumps(index))
    return folder


def pack_fake(folder: Path, dest: Path, **overrides: Any) -> PackedBundle:
    """``folder`` packed as a 5m LightGBMRegressor trained from FROM to TO."""
    return pack_bundle(
        folder,
        dest,
        freqai_model="LightGBMRegressor",
        timeframe="5m",
        freqai={"feature_parameters": {"DI_threshold": 0.9}},
        trained_from=FROM,
        trained_to=TO,
        metrics={"BTC/USDT": {"r2": 0.1}},
        **overrides,
    )


# ------------------------------------------------------------------------------ archives made to be refused


def tar_of(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A tar of ``members`` (regular files) and ``links`` (symlinks), in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]
