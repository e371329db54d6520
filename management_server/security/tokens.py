"""Signing access tokens and personal access tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt

from management_server.security.keys import KeyRing
from shared.auth.claims import ALGORITHM, TokenType


def sign_token(
    keys: KeyRing,
    *,
    issuer: str,
    audience: str,
    subject: uuid.UUID,
    role: str,
    token_type: TokenType,
    lifetime: timedelta,
    version: int,
    scopes: frozenset[str],
    token_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> tuple[str, uuid.UUID, datetime]:
    """A signed JWT; returns it with its id and expiry."""
    now = now or datetime.now(UTC)
    token_id = token_id or uuid.uuid4()
    expires = now + lifetime
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": str(subject),
        "role": role,
        "typ": token_type.value,
        "scope": " ".join(sorted(scopes)),
        "ver": version,
        "jti": str(token_id),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    token = jwt.encode(payload, keys.active.private, algorithm=ALGORITHM, headers={"kid": keys.active.kid})
    return token, token_id, expires
