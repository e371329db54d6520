"""The FreqAI parameters a user may set, with types and bounds: nothing else reaches a config or a command line.

A training request's ``freqai`` (:class:`TrainingParameters`) and a bot's ``freqai`` (:class:`BotParameters`)
are checked against these models; an unknown key, a wrong type or a value out of bounds is refused with the
field's path. Pairs and timeframes must look like pairs and timeframes (``BTC/USDT``, ``5m``): a value such as
``--config`` can never be one, so nothing a user sends can become an option of Freqtrade's command line
(``include_corr_pairlist`` and ``include_timeframes`` do end up on ``freqtrade download-data``'s).

The keys that decide what is trained and where it is written (``identifier``, windows, saving, retraining,
TensorBoard) are not the user's: the training run and the gateway set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PAIR_PATTERN = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$"
TIMEFRAME_PATTERN = r"^[1-9][0-9]{0,2}[mhdw]$"
Pair = Annotated[str, StringConstraints(pattern=PAIR_PATTERN)]
FeatureTimeframe = Annotated[str, StringConstraints(pattern=TIMEFRAME_PATTERN)]
# A model's constructor argument (LightGBM, XGBoost, scikit-learn): a number, a flag or a short plain word.
ParameterName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
ParameterWord = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:]{0,49}$")]
ParameterValue = (
    Annotated[int, Field(ge=-(2**31), le=2**31)] | Annotated[float, Field(allow_inf_nan=False)] | bool | ParameterWord
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class SvmParameters(_Strict):
    shuffle: bool | None = None
    nu: float | None = Field(default=None, gt=0, le=1)


class FeatureParameters(_Strict):
    include_timeframes: list[FeatureTimeframe] | None = Field(default=None, min_length=1, max_length=8)
    include_corr_pairlist: list[Pair] | None = Field(default=None, max_length=50)
    label_period_candles: int | None = Field(default=None, ge=1, le=1000)
    include_shifted_candles: int | None = Field(default=None, ge=0, le=50)
    indicator_periods_candles: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(default=None, max_length=20)
    DI_threshold: float | None = Field(default=None, ge=0, le=100)
    weight_factor: float | None = Field(default=None, ge=0, le=100)
    principal_component_analysis: bool | None = None
    use_SVM_to_remove_outliers: bool | None = None
    svm_params: SvmParameters | None = None
    use_DBSCAN_to_remove_outliers: bool | None = None
    noise_standard_deviation: float | None = Field(default=None, ge=0, le=10)
    outlier_protection_percentage: float | None = Field(default=None, ge=0, le=100)
    reverse_train_test_order: bool | None = None
    shuffle_after_split: bool | None = None
    buffer_train_data_candles: int | None = Field(default=None, ge=0, le=10_000)
    inlier_metric_window: int | None = Field(default=None, ge=0, le=1000)


class DataSplitParameters(_Strict):
    test_size: float | None = Field(default=None, gt=0, lt=1)
    random_state: int | None = Field(default=None, ge=0, le=2**31 - 1)
    shuffle: bool | None = None


class TrainingParameters(_Strict):
    """The ``freqai`` section of a training request (what the user may choose)."""

    feature_parameters: FeatureParameters | None = None
    data_split_parameters: DataSplitParameters | None = None
    model_training_parameters: dict[ParameterName, ParameterValue] | None = Field(default=None, max_length=50)
    fit_live_predictions_candles: int | None = Field(default=None, ge=0, le=100_000)
    outlier_protection_percentage: float | None = Field(default=None, ge=0, le=100)
    reduce_df_footprint: bool | None = None

    def section(self) -> dict[str, Any]:
        """As the plain ``freqai`` dict that is stored and merged over the defaults (unset keys left out)."""
        return self.model_dump(exclude_none=True)


class BotParameters(TrainingParameters):
    """The ``freqai`` section of a bot: a training request's keys plus its live windows."""

    train_period_days: int | None = Field(default=None, ge=1, le=365)
    backtest_period_days: float | None = Field(default=None, gt=0, le=365)
    expiration_hours: float | None = Field(default=None, ge=0, le=24 * 365)


def checked_section(model: type[TrainingParameters], value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` checked against ``model``: the plain section, or ``ValueError`` naming each wrong field."""
    try:
        parsed = model.model_validate(value)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            path = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(
                    f"freqai may set only FreqAI's own parameters: {path} is not one of them (the run sets the "
                    "identifier, the windows, saving and retraining itself)"
                )
            else:
                problems.append(f"freqai.{path}: {err['msg']}")
        raise ValueError("; ".join(problems)) from None
    return parsed.section()
