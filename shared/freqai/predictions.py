"""The predictions a gateway reads from a running FreqAI bot: the body of the gateway's
``GET /api/v1/bots/{id}/predictions``, which the management server passes on as it is. One definition for both
services, so the two ends of the call can't drift apart."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class PredictionOut(BaseModel):
    """The newest FreqAI outputs of one pair, from the bot's analysed dataframe."""

    pair: str
    candle_time: datetime | None = Field(description="The candle they were made on (the newest closed one).")
    predictions: dict[str, Any] = Field(
        description="FreqAI's label columns ('&-...'): the prediction per label, and its '_mean' / '_std'."
    )
    do_predict: int | None = Field(description="1: FreqAI trusts the prediction; 0: outlier or warming up; 2: expired.")
    DI_values: float | None = Field(description="Dissimilarity index (0 when the model has no DI threshold).")
    model_id: uuid.UUID | None = Field(description="The model version that made them (None: not known to be ours).")
    model_version: int | None
    model_sha256: str | None


class InstalledModelOut(BaseModel):
    """One install of a model version for a bot."""

    install_id: uuid.UUID
    model_id: uuid.UUID
    version: int
    sha256: str
    freqai_model: str
    pairs: list[str]
    reason: Literal["start", "update", "rollback", "restore"]
    installed_at: datetime
    status: Literal["pending", "loaded", "failed"]
    loaded_at: datetime | None
    load_seconds: float | None
    error: str | None


class PredictionsOut(BaseModel):
    gateway_id: str
    bot_id: uuid.UUID
    timeframe: str
    model: InstalledModelOut | None = Field(description="The model installed for the bot now.")
    predictions: list[PredictionOut]
