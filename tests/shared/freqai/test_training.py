"""Training FreqAI models for real: freqtrade against the exchange simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from management_server.strategies.validation import validate_strategy
from shared.freqai.bundle import LIVE_FILE_KINDS
from shared.freqai.catalog import UnknownModel
from shared.freqai.training import (
    IDENTIFIER,
    TrainingFailed,
    TrainingRequest,
    train_model,
    training_freqai_section,
    validate_request,
)
from shared.sandbox.host import detect
from shared.sandbox.policy import Limits
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.freqai_models import FREQAI_STRATEGY, PAIRS, TrainedModels, request
from tests.hostile import assert_contained, worker_targets

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.slow
def test_a_training_gives_a_model_per_pair_with_its_features_and_metrics(models: TrainedModels) -> None:
    trained = models.a
    result = trained.result
    assert result.pairs == list(PAIRS)
    assert result.model_dir.name == IDENTIFIER
    index = json.loads((result.model_dir / "pair_dictionary.json").read_text())
    for pair in PAIRS:
        entry = index[pair]
        folder = result.model_dir / Path(entry["data_path"]).name
        assert all((folder / f"{entry['model_filename']}_{kind}").is_file() for kind in LIVE_FILE_KINDS)
        assert len(result.features[pair]) == 8  # 3 indicators x 2 periods, pct-change, hour of day
        metrics = result.metrics[pair]
        assert metrics["train_rows"] > 300
        assert metrics["test_rows"] > 100
        assert set(metrics["labels"]["&-s_close"]) == {"r2", "rmse", "mae", "sign_accuracy"}
        assert 0 <= metrics["labels"]["&-s_close"]["sign_accuracy"] <= 1
    assert result.labels == ["&-s_close"]
    assert result.trained_to - result.trained_from == timedelta(days=2)
    assert result.freqai["feature_parameters"]["DI_threshold"] == 0.9
    assert result.freqai["identifier"] == IDENTIFIER
    steps = [(p.step, p.pairs_done) for p in trained.progress]
    assert steps == [("download", 0), ("train", 0), ("train", 1), ("train", 2), ("done", 2)]
    manifest = trained.packed.manifest
    assert set(manifest.pairs) == set(PAIRS)
    assert manifest.freqai_model == "LightGBMRegressor"
    assert manifest.metrics == result.metrics
    assert models.a.sha256 != models.b.sha256  # other windows, other models


BROKEN = FREQAI_STRATEGY.replace(
    '        dataframe["%-hour_of_day"] = dataframe["date"].dt.hour\n',
    '        raise ValueError("no hour for you")\n',
)


@pytest.mark.slow
def test_a_strategy_that_raises_fails_the_training_with_its_reason(simulator: SimulatorProcess, tmp_path: Path) -> None:
    assert BROKEN != FREQAI_STRATEGY
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    req = TrainingRequest(**(request(hour - timedelta(hours=6), days=1).__dict__ | {"strategy_source": BROKEN}))
    with pytest.raises(TrainingFailed) as failed:
        train_model(req, workdir=tmp_path / "work", simulator_url=simulator.url, timeout=120)
    assert "no hour for you" in str(failed.value)
    assert "The last lines of freqtrade's log" in str(failed.value)


def test_requests_that_cannot_be_trained_are_refused_before_anything_runs() -> None:
    good = request(NOW - timedelta(hours=6))
    validate_request(good, now=NOW)
    cases = {
        "6 h before now": {"end": NOW - timedelta(hours=5)},
        "whole number from 1 to 365": {"days": 0},
        "one \\(the stake\\) currency": {"pairs": ["BTC/USDT", "ETH/BTC"]},
        "listed twice": {"pairs": ["BTC/USDT", "BTC/USDT"]},
        "not BASE/QUOTE": {"pairs": ["btc-usdt"]},
        "does not define class": {"strategy_class": "Other"},
        "time zone": {"end": datetime(2026, 2, 1)},
        "two candles": {"holdout_hours": 0.1},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            validate_request(TrainingRequest(**(good.__dict__ | change)), now=NOW)
    with pytest.raises(UnknownModel, match="allowed: LightGBMRegressor"):
        validate_request(TrainingRequest(**(good.__dict__ | {"freqai_model": "ReinforcementLearner"})), now=NOW)


def test_the_run_decides_identifier_windows_and_saving() -> None:
    req = TrainingRequest(
        **(
            request(NOW, days=4).__dict__
            | {
                "freqai": {
                    "identifier": "mine",
                    "train_period_days": 99,
                    "live_retrain_hours": 1,
                    "feature_parameters": {"DI_threshold": 0.5},
                    "model_training_parameters": {"n_estimators": 7},
                },
                "holdout_hours": 12,
            }
        )
    )
    section = training_freqai_section(req)
    assert section["identifier"] == IDENTIFIER
    assert section["train_period_days"] == 4
    assert section["backtest_period_days"] == 0.5
    assert section["save_backtest_models"] is True
    assert section["live_retrain_hours"] == 0
    assert section["feature_parameters"]["DI_threshold"] == 0.5
    assert section["feature_parameters"]["include_timeframes"] == ["5m"]
    assert section["feature_parameters"]["indicator_periods_candles"] == [10, 20]  # a default kept
    assert section["model_training_parameters"] == {"n_estimators": 7}


@pytest.mark.slow
def test_a_hostile_strategy_in_a_training_reaches_nothing(simulator: SimulatorProcess, tmp_path: Path) -> None:
    """What the worker runs: the training under the host's sandbox, as the training's own uid when root."""
    sandbox = detect(610_000, Limits())
    assert sandbox.mode != "none"
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with worker_targets(tmp_path, FREQAI_STRATEGY) as source:
        assert validate_strategy(source).ok
        req = TrainingRequest(**(request(hour - timedelta(hours=6), days=1).__dict__ | {"strategy_source": source}))
        with pytest.raises(TrainingFailed) as failed:
            train_model(req, workdir=tmp_path / "work", simulator_url=simulator.url, timeout=120, sandbox=sandbox)
    assert_contained(str(failed.value), tmp_path)
