from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrategyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w .-]+$")
    source: str = Field(min_length=1, max_length=256 * 1024, description="The strategy's Python source.")


class ProblemOut(BaseModel):
    line: int
    message: str


class StrategyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    class_name: str
    status: str = Field(description="pending_review, approved or rejected")
    errors: list[ProblemOut] = Field(default_factory=list)
    review_note: str | None
    check_status: str
    check_result: dict[str, Any] | None
    sha256: str
    created_at: datetime
    updated_at: datetime


class StrategyDetail(StrategyOut):
    source: str


class StrategyInvalid(BaseModel):
    detail: str
    errors: list[ProblemOut] = Field(default_factory=list, description="Each problem with its line.")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=2000)
