"""Bodies of the model routes: training requests, model versions, deployments, predictions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from management_server.bots.schemas import FREQTRADE_TIMEFRAMES
from shared.bus.messages import PairName, Timeframe
from shared.freqai.catalog import ALLOWED_MODELS, DEFAULT_MODEL
from shared.freqai.parameters import TrainingParameters, checked_section

MAX_FREQAI_JSON = 20_000
NAME_PATTERN = r"^[\w .-]+$"
EARLIEST_END = datetime(2010, 1, 1, tzinfo=UTC)
LATEST_END = datetime(2100, 1, 1, tzinfo=UTC)


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=NAME_PATTERN,
        description="The model's name; each training under one name is its next version. Default: the strategy's "
        "class name.",
    )
    strategy_id: uuid.UUID | None = Field(
        default=None,
        description="An approved FreqAI strategy of yours (feature_engineering_* and set_freqai_targets); leave it "
        "out to train the shipped example FreqaiExample (examples/strategies/FreqaiExample.py).",
    )
    pairs: list[PairName] = Field(min_length=1, max_length=50, examples=[["BTC/USDT", "ETH/USDT"]])
    timeframe: Timeframe = "5m"
    exchange: str = Field(
        default="simulator",
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="Where the candles come from: the exchange simulator, or a ccxt exchange id (public candles).",
    )
    freqai_model: str = Field(
        default=DEFAULT_MODEL, description=f"The FreqAI model class, one of: {', '.join(ALLOWED_MODELS)}."
    )
    freqai: dict[str, Any] = Field(
        default_factory=dict,
        description="FreqAI parameters: feature_parameters, data_split_parameters, model_training_parameters, "
        "fit_live_predictions_candles, outlier_protection_percentage, reduce_df_footprint.",
        examples=[{"model_training_parameters": {"n_estimators": 100}}],
    )
    days: int = Field(default=7, ge=1, le=365, description="Days of candles the model learns from, before `end`.")
    end: AwareDatetime | None = Field(
        default=None,
        description="End of the training window (default: now less holdout_hours, on a whole candle). FreqAI then "
        "predicts the holdout after it, out of sample, for the metrics.",
    )
    holdout_hours: float = Field(default=6.0, gt=0, le=720, description="Hours after `end` predicted out of sample.")

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in FREQTRADE_TIMEFRAMES:
            raise ValueError(f"unknown timeframe: use one of {', '.join(FREQTRADE_TIMEFRAMES)}")
        return value

    @field_validator("freqai_model")
    @classmethod
    def _allowed_model(cls, value: str) -> str:
        if value not in ALLOWED_MODELS:
            raise ValueError(f"unknown FreqAI model {value!r}: use one of {', '.join(ALLOWED_MODELS)}")
        return value

    @field_validator("freqai")
    @classmethod
    def _freqai_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_FREQAI_JSON:
            raise ValueError(f"freqai is larger than {MAX_FREQAI_JSON} characters of JSON")
        return checked_section(TrainingParameters, value)

    @field_validator("end")
    @classmethod
    def _plausible_end(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST_END <= value <= LATEST_END:
            raise ValueError("end must be between 2010 and 2100 (UTC)")
        return value

    @field_validator("pairs")
    @classmethod
    def _distinct_pairs(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a pair is listed twice")
        return value


class ModelOut(BaseModel):
    """A model version as listed: what it is, where its training is, and its bundle once registered."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The model id (the bus and the gateways know the version by it).")
    owner_id: uuid.UUID
    name: str
    version: int
    source: Literal["training", "upload"]
    status: Literal["queued", "running", "succeeded", "failed"]
    strategy_id: uuid.UUID | None
    strategy_class: str | None
    exchange: str | None
    freqai_model: str
    pairs: list[str]
    timeframe: str
    trained_from: datetime
    trained_to: datetime
    progress: dict[str, Any] | None = Field(
        description="While it trains: step (download, train, pack, done), pairs_done, pairs_total, fraction, pair."
    )
    attempts: int = Field(description="Times a worker started this training (more than 1 after a worker was lost).")
    error: str | None = Field(description="Why the training failed, in one sentence.")
    sha256: str | None = Field(description="sha256 of the bundle (the uncompressed tar), once registered.")
    size: int | None = Field(description="Bytes of the bundle, uncompressed.")
    compressed_size: int | None = Field(description="Bytes of the bundle as it is stored and sent (zstd).")
    metrics: dict[str, Any] | None = Field(description="Per pair: test-set metrics of the training.")
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ModelDetail(ModelOut):
    """One model version in full: its features, labels, FreqAI section, library versions and the log tail."""

    holdout_hours: float | None
    freqai: dict[str, Any] = Field(description="The request's FreqAI parameters; once trained, the section used.")
    features: dict[str, list[str]] | None = Field(description="Per pair, the features the model reads.")
    labels: list[str] | None
    identifier: str | None
    library_versions: dict[str, str] | None = Field(
        description="Versions of the libraries whose objects the bundle's pickles carry; bots must run the same."
    )
    log_tail: list[str] | None = Field(description="The last lines of Freqtrade's log, when the training failed.")
    task_id: str | None
    strategy_sha256: str | None


class DeployIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: uuid.UUID = Field(description="A succeeded model version (GET /api/v1/models).")


class DeploymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: uuid.UUID
    previous_model_id: uuid.UUID | None = Field(description="The model the bot had before (what a rollback restores).")
    action: Literal["deploy", "rollback", "start"] = Field(
        description="deploy, rollback, or start (the bot started with its model: recorded when the gateway reported)."
    )
    state: Literal["pending", "loaded", "rejected", "superseded"] = Field(
        description="pending: sent (or waiting for the bot's next start); loaded: the bot predicts with it; "
        "rejected: refused by the gateway or the bot (reason), the bot kept its model; superseded: another "
        "deployment followed before this one was reported."
    )
    command_id: uuid.UUID | None = Field(description="event_id of the command that carried it (none: bot stopped).")
    command_type: str | None
    transfer: str | None = Field(description="inline (Base64 in the message), chunked (Redis) or cached (gateway).")
    requested_by: uuid.UUID | None
    requested_at: datetime
    reported_at: datetime | None
    load_seconds: float | None
    reason: str | None


class BotModelOut(BaseModel):
    bot_id: uuid.UUID
    model_id: uuid.UUID | None = Field(description="The model the bot should run (sent with its start).")
    model_state: str | None = Field(description="State of its latest deployment: pending, loaded or rejected.")
    model_loaded_id: uuid.UUID | None = Field(description="The model the bot last reported predicting with.")
    history: list[DeploymentOut] = Field(description="Deployments and rollbacks, newest first.")


class DeployOut(BotModelOut):
    deployment: DeploymentOut
    notice: str | None = Field(default=None, description="Set when the gateway is not answering right now.")


class ModelKeysOut(BaseModel):
    keys: list[dict[str, str]]
