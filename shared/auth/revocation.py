"""Revocation both services see at once, kept in the Redis they share.

Two mechanisms. A token can be revoked by its id (``jti``) until it would have expired
anyway (a personal access token deleted by its owner, the access token presented at
logout). And every user has a token version per token type; tokens carry the version
they were issued under (``ver``), and bumping it (logout, password change, disabling
the user) invalidates every older token of that type at once, with no clock race.

The management server's database is the source of truth: it writes here on every change
and rewrites the lot at start (``freqfleet up`` after a Redis without persistence).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from shared.auth.claims import TokenClaims, TokenType

PREFIX = "freqfleet:auth"


class RevocationStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    @staticmethod
    def _jti_key(token_id: uuid.UUID) -> str:
        return f"{PREFIX}:revoked:{token_id}"

    @staticmethod
    def _version_key(token_type: TokenType, user_id: uuid.UUID) -> str:
        return f"{PREFIX}:version:{token_type.value}:{user_id}"

    async def revoke_token(self, token_id: uuid.UUID, expires_at: datetime) -> None:
        ttl = int((expires_at - datetime.now(UTC)).total_seconds()) + 60
        if ttl > 0:
            await self.redis.set(self._jti_key(token_id), 1, ex=ttl)

    async def set_version(self, user_id: uuid.UUID, token_type: TokenType, version: int) -> None:
        await self.redis.set(self._version_key(token_type, user_id), version)

    async def revocation_reason(self, claims: TokenClaims) -> str | None:
        """Why this token no longer counts, or None while it does."""
        # One command (every authenticated request asks): the revocation mark, if any, and the current version.
        revoked, version = await self.redis.mget(
            self._jti_key(claims.token_id), self._version_key(claims.token_type, claims.subject)
        )
        if revoked is not None:
            return "the token was revoked"
        if version is not None and claims.version < int(version):
            return "the token was invalidated (logout, password change or account change)"
        return None
