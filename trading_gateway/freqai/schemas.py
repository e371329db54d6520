"""Bodies of the gateway's model routes (the predictions' in :mod:`shared.freqai.predictions`)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from shared.freqai.predictions import InstalledModelOut


class BotModelsOut(BaseModel):
    gateway_id: str
    bot_id: uuid.UUID
    history: list[InstalledModelOut] = Field(description="Installs, newest first; the first is installed now.")
