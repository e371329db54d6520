from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exchange: str = Field(pattern=r"^[a-z][a-z0-9_]{1,40}$", description="ccxt exchange id, e.g. binance")
    label: str = Field(min_length=1, max_length=100)
    key: SecretStr = Field(min_length=1, max_length=512)
    secret: SecretStr = Field(min_length=1, max_length=1024)
    password: SecretStr | None = Field(default=None, max_length=512, description="Only for exchanges that use one.")


class CredentialOut(BaseModel):
    """What the API shows of stored credentials: never the keys."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    exchange: str
    label: str
    created_at: datetime
