from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    occurred_at: datetime
    actor_id: uuid.UUID | None
    actor: str
    via: str
    action: str
    target_type: str | None
    target_id: str | None
    outcome: str
    reason: str | None
    ip: str | None
    correlation_id: str | None
    details: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before_id: int | None
