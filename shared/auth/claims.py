"""What a verified token says."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

ALGORITHM = "EdDSA"


class TokenType(StrEnum):
    access = "access"  # short-lived, from a login or a refresh
    pat = "pat"  # a personal access token: named, scoped, long-lived, revocable


class Scope(StrEnum):
    read = "read"
    trade = "trade"
    admin = "admin"


@dataclass(frozen=True)
class TokenClaims:
    subject: uuid.UUID
    role: str
    token_type: TokenType
    token_id: uuid.UUID  # jti
    scopes: frozenset[str]
    version: int
    issued_at: datetime
    expires_at: datetime

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
