"""What authentication reads from the database about a token's user (and personal access token), remembered per
token version so that most requests need no PostgreSQL at all.

Why remembering is safe: whatever takes a user's power away or changes it bumps a version of theirs
(``AuthService.invalidate_all``: logout, password change, role change, disabling), and those versions are in the
revocation store (Redis) that ``get_principal`` asks on every request, so a token of before is refused at once on
every process. A token of after carries the new version, which is not what was remembered: its facts are read
again. A revoked personal access token is refused by its id in the same store. When Redis does not answer, the
facts are read afresh (``fresh``). Should Redis lose its data, every management process notices within seconds and
rewrites it from the database (``auth/keeper.py``, ``AuthService.sync_revocations``); until then a remembered entry
may let a revoked token through for at most ``FACTS_SECONDS``. Entries are bounded in number.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from management_server.auth.models import PersonalAccessToken
from management_server.users.models import Role, User
from shared.auth import TokenClaims, TokenType

FACTS_SECONDS = 60.0
FACTS_MAX = 10_000


@dataclass(frozen=True)
class UserFacts:
    """A user as a request sees it (what ``UserOut`` shows, and the token versions); routes that change the user
    load the row itself."""

    id: uuid.UUID
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    access_token_version: int
    pat_version: int

    @classmethod
    def of(cls, user: User) -> UserFacts:
        return cls(
            user.id,
            user.email,
            user.role,
            user.is_active,
            user.created_at,
            user.access_token_version,
            user.pat_version,
        )


@dataclass(frozen=True)
class PatFacts:
    user_id: uuid.UUID
    token_hash: str
    revoked_at: datetime | None
    expires_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: PersonalAccessToken) -> PatFacts:
        return cls(row.user_id, row.token_hash, row.revoked_at, row.expires_at, row.last_used_at)


class PrincipalFacts:
    """The facts of the users and personal access tokens that called lately, keyed by the token's version."""

    def __init__(self, seconds: float = FACTS_SECONDS, size: int = FACTS_MAX) -> None:
        self.seconds = seconds
        self.size = size
        self._users: dict[tuple[uuid.UUID, TokenType, int], tuple[UserFacts | None, float]] = {}
        self._pats: dict[uuid.UUID, tuple[PatFacts | None, float]] = {}

    async def user(self, session: AsyncSession, claims: TokenClaims, *, fresh: bool = False) -> UserFacts | None:
        """The token's user (None: no such user); ``fresh``: read now (the revocation store did not answer)."""
        key = (claims.subject, claims.token_type, claims.version)
        now = time.monotonic()
        found = self._users.get(key)
        if found is not None and now < found[1] and not fresh:
            return found[0]
        user = await session.get(User, claims.subject)
        facts = None if user is None else UserFacts.of(user)
        self._users = _kept(self._users, now, self.size)
        self._users[key] = (facts, now + self.seconds)
        return facts

    async def pat(self, session: AsyncSession, token_id: uuid.UUID, *, fresh: bool = False) -> PatFacts | None:
        now = time.monotonic()
        found = self._pats.get(token_id)
        if found is not None and now < found[1] and not fresh:
            return found[0]
        row = await session.get(PersonalAccessToken, token_id)
        facts = None if row is None else PatFacts.of(row)
        self._pats = _kept(self._pats, now, self.size)
        self._pats[token_id] = (facts, now + self.seconds)
        return facts

    def used(self, token_id: uuid.UUID, facts: PatFacts, at: datetime) -> None:
        """The token's ``last_used_at`` was written: remember it, so it is written once a minute, not per request."""
        if token_id in self._pats:
            kept = PatFacts(facts.user_id, facts.token_hash, facts.revoked_at, facts.expires_at, at)
            self._pats[token_id] = (kept, self._pats[token_id][1])


K = TypeVar("K")
V = TypeVar("V")


def _kept(entries: dict[K, tuple[V, float]], now: float, size: int) -> dict[K, tuple[V, float]]:
    """``entries`` with room for one more: the expired ones dropped, then (still full) the oldest half."""
    if len(entries) < size:
        return entries
    entries = {key: entry for key, entry in entries.items() if entry[1] > now}
    if len(entries) >= size:
        entries = dict(list(entries.items())[size // 2 :])
    return entries
