"""The FreqAI parameter schema: nothing a user sends becomes an option on Freqtrade's command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.freqai.parameters import BotParameters, TrainingParameters, checked_section
from shared.freqai.training import TrainingRequest, validate_request

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
OPTIONISH = st.sampled_from(["--config", "-c", "--userdir", "--datadir", "--strategy-path", "-", "--"]).flatmap(
    lambda prefix: st.text(max_size=20).map(lambda tail: prefix + tail)
)
KEYS = st.sampled_from(["include_corr_pairlist", "include_timeframes", "indicator_periods_candles", "DI_threshold"])


def _argv_values(section: dict[str, Any]) -> list[str]:
    """What download-data's command line gets from a checked section (see shared/freqai/training.py)."""
    features = section.get("feature_parameters") or {}
    return [*features.get("include_corr_pairlist", []), *features.get("include_timeframes", [])]


@settings(max_examples=400, deadline=None)
@given(
    key=KEYS,
    value=st.one_of(JSON, OPTIONISH, st.lists(st.one_of(OPTIONISH, st.text(max_size=20)), max_size=4)),
    extra=st.dictionaries(st.text(max_size=20), JSON, max_size=3),
)
def test_no_accepted_section_puts_an_option_on_the_command_line(key: str, value: Any, extra: dict[str, Any]) -> None:
    for model in (TrainingParameters, BotParameters):
        body = {"feature_parameters": {key: value}, **extra}
        try:
            section = checked_section(model, body)
        except ValueError:
            continue  # refused: fine
        for item in _argv_values(section):
            assert not item.startswith("-"), item
            assert "/" in item or item[-1] in "mhdw", item


@pytest.mark.parametrize(
    "body",
    [
        {"feature_parameters": {"include_corr_pairlist": ["--config", "../../../master.keys"]}},
        {"feature_parameters": {"include_timeframes": ["--userdir", "/tmp"]}},
        {"feature_parameters": {"include_corr_pairlist": "BTC/USDT"}},
        {"identifier": "../../elsewhere"},
        {"model_training_parameters": {"n_jobs": "--datadir"}},
        {"model_training_parameters": {"--x": 1}},
        {"data_split_parameters": {"test_size": 2}},
        {"feature_parameters": {"DI_threshold": float("inf")}},
    ],
)
def test_bad_sections_are_refused_with_the_field(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"freqai"):
        checked_section(TrainingParameters, body)


def test_a_usual_section_passes_unchanged() -> None:
    body = {
        "feature_parameters": {
            "include_corr_pairlist": ["ETH/USDT"],
            "include_timeframes": ["5m", "1h"],
            "indicator_periods_candles": [10, 20],
            "DI_threshold": 0.9,
            "label_period_candles": 12,
        },
        "data_split_parameters": {"test_size": 0.25, "shuffle": False},
        "model_training_parameters": {"n_estimators": 100, "learning_rate": 0.05, "verbosity": -1},
    }
    assert checked_section(TrainingParameters, body) == body


def test_the_runner_refuses_options_even_when_the_api_was_bypassed() -> None:
    """A request stored before the schema (or written straight into the database) still never reaches argv."""
    now = datetime.now(UTC)
    request = TrainingRequest(
        strategy_source="class X(IStrategy): pass",
        strategy_class="X",
        pairs=["BTC/USDT"],
        timeframe="5m",
        end=now - timedelta(days=1),
        days=2,
        freqai={"feature_parameters": {"include_corr_pairlist": ["--config", "/etc/shadow"]}},
    )
    with pytest.raises(ValueError, match="include_corr_pairlist"):
        validate_request(request, now)
