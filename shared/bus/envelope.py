"""The envelope every bus message has, and the payload base (``shared/bus/messages.py`` has the messages).

Models forbid unknown fields, so a producer that drifts from the schema is caught at the consumer (and its message
dead-lettered) rather than half-applied.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

BotId = uuid.UUID
Generation = Annotated[int, Field(ge=0, description="The bot's generation when the command was issued.")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PairName = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$", examples=["BTC/USDT"])]
Timeframe = Annotated[str, Field(pattern=r"^[0-9]{1,3}[smhdwM]$", examples=["5m"])]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields every message has; subclasses fix ``type`` and ``data``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[Literal["command", "event"]]
    supported_versions: ClassVar[frozenset[int]] = frozenset({SCHEMA_VERSION})

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; the idempotency key.")
    type: str
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=_now)
    correlation_id: str | None = Field(default=None, max_length=128)
    source: str = Field(min_length=1, max_length=128, description="Who published it: management, gateway:<id>.")
    data: Payload

    @model_validator(mode="after")
    def _known_version(self) -> Envelope:
        if self.schema_version not in self.supported_versions:
            raise ValueError(
                f"schema_version {self.schema_version} of {self.type} is not supported "
                f"(supported: {sorted(self.supported_versions)})"
            )
        return self
