"""Logging in, refreshing, logging out, changing passwords, personal access tokens.

Every way a token stops counting is written twice: in the database (the source of
truth, checked by the management server on each request) and in Redis (the revocation
store the gateway reads), so a logout takes effect on both services at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.auth.models import PersonalAccessToken, RefreshToken
from management_server.config import ManagementSettings
from management_server.security.keys import KeyRing
from management_server.security.passwords import verify_password
from management_server.security.tokens import sign_token
from management_server.users.models import Role, User
from management_server.users.service import get_by_email
from shared.auth.claims import Scope, TokenType
from shared.auth.revocation import RevocationStore

REFRESH_PREFIX = "ffr_"
SYNCED_KEY = "freqfleet:auth:synced"  # written last by sync_revocations: without it, Redis lost them


def scopes_of_role(role: Role) -> frozenset[str]:
    """What an interactive session of this role may do."""
    if role is Role.admin:
        return frozenset({Scope.read, Scope.trade, Scope.admin})
    if role is Role.user:
        return frozenset({Scope.read, Scope.trade})
    return frozenset({Scope.read})  # service accounts get more only through scoped tokens


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def personal_tokens(session: AsyncSession, user_id: uuid.UUID) -> list[PersonalAccessToken]:
    """The user's personal access tokens, newest first."""
    rows = await session.execute(
        select(PersonalAccessToken)
        .where(PersonalAccessToken.user_id == user_id)
        .order_by(PersonalAccessToken.created_at.desc())
    )
    return list(rows.scalars())


async def personal_token(session: AsyncSession, user_id: uuid.UUID, token_id: uuid.UUID) -> PersonalAccessToken | None:
    """One of the user's personal access tokens (nobody else's)."""
    row = await session.get(PersonalAccessToken, token_id)
    return row if row is not None and row.user_id == user_id else None


class AuthError(Exception):
    """Refused; ``reason`` is for the audit log, never for the client."""

    def __init__(self, reason: str, user: User | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


class AuthService:
    def __init__(
        self, settings: ManagementSettings, keys: KeyRing, hasher: PasswordHasher, revocations: RevocationStore
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.hasher = hasher
        self.revocations = revocations
        # Verifying against this when the email is unknown makes both answers take as long.
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(16))

    # -- passwords ------------------------------------------------------------------------

    async def authenticate(self, session: AsyncSession, email: str, password: str) -> User:
        user = await get_by_email(session, email)
        if user is None:
            verify_password(self.hasher, self._dummy_hash, password)
            raise AuthError("unknown email")
        if not verify_password(self.hasher, user.password_hash, password):
            raise AuthError("wrong password", user)
        if not user.is_active:
            raise AuthError("account disabled", user)
        if self.hasher.check_needs_rehash(user.password_hash):
            user.password_hash = self.hasher.hash(password)  # parameters rose since it was set
        return user

    async def change_password(self, session: AsyncSession, user: User, current: str, new: str) -> None:
        if not verify_password(self.hasher, user.password_hash, current):
            raise AuthError("wrong current password", user)
        user.password_hash = self.hasher.hash(new)
        user.password_changed_at = datetime.now(UTC)
        await self.invalidate_all(session, user, personal_tokens=True)

    # -- sessions -------------------------------------------------------------------------

    def access_token(self, user: User) -> tuple[str, int]:
        lifetime = timedelta(minutes=self.settings.access_token_minutes)
        token, _, _ = sign_token(
            self.keys,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            subject=user.id,
            role=user.role.value,
            token_type=TokenType.access,
            lifetime=lifetime,
            version=user.access_token_version,
            scopes=scopes_of_role(user.role),
        )
        return token, int(lifetime.total_seconds())

    def _new_refresh(
        self, user: User, family_id: uuid.UUID, family_expires_at: datetime, now: datetime
    ) -> tuple[str, RefreshToken]:
        raw = REFRESH_PREFIX + secrets.token_urlsafe(32)
        row = RefreshToken(
            token_hash=token_hash(raw),
            family_id=family_id,
            user_id=user.id,
            issued_at=now,
            expires_at=min(now + timedelta(days=self.settings.refresh_token_days), family_expires_at),
            family_expires_at=family_expires_at,
        )
        return raw, row

    async def start_session(self, session: AsyncSession, user: User) -> TokenPair:
        now = datetime.now(UTC)
        raw, row = self._new_refresh(user, uuid.uuid4(), now + timedelta(days=self.settings.refresh_family_days), now)
        session.add(row)
        access, expires_in = self.access_token(user)
        return TokenPair(access, raw, expires_in, user)

    async def refresh(self, session: AsyncSession, raw: str) -> TokenPair:
        """Rotate: the presented token is used up and replaced. A used one presented again
        means it was stolen (or the client is confused): its whole family is revoked."""
        now = datetime.now(UTC)
        row = (
            await session.execute(
                select(RefreshToken).where(RefreshToken.token_hash == token_hash(raw)).with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            raise AuthError("unknown refresh token")
        user = await session.get(User, row.user_id)
        if row.used_at is not None:
            await self.revoke_family(session, row.family_id, now)
            raise AuthError("refresh token reused: family revoked", user)
        if row.revoked_at is not None:
            raise AuthError("refresh token revoked", user)
        if row.expires_at <= now:
            raise AuthError("refresh token expired", user)
        if user is None or not user.is_active:
            raise AuthError("account disabled", user)
        row.used_at = now
        new_raw, new_row = self._new_refresh(user, row.family_id, row.family_expires_at, now)
        session.add(new_row)
        access, expires_in = self.access_token(user)
        return TokenPair(access, new_raw, expires_in, user)

    async def revoke_family(self, session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def logout(self, session: AsyncSession, user: User, refresh_token: str | None) -> None:
        """End this login (its refresh family) and every access token of the user."""
        now = datetime.now(UTC)
        if refresh_token:
            row = (
                await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token)))
            ).scalar_one_or_none()
            if row is not None and row.user_id == user.id:
                await self.revoke_family(session, row.family_id, now)
        await self.invalidate_all(session, user, personal_tokens=False)

    async def invalidate_all(self, session: AsyncSession, user: User, *, personal_tokens: bool) -> None:
        """Every access token (and with ``personal_tokens`` every PAT and refresh token) of the user
        stops counting now, on both services."""
        user.access_token_version += 1
        if personal_tokens:
            user.pat_version += 1
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        await session.flush()
        await self.publish_versions(user)

    async def change_account(self, session: AsyncSession, user: User, role: Role | None, active: bool | None) -> None:
        """Change a user's role or disable them (None: unchanged); every token of theirs (access, refresh, personal)
        stops working at once: a token keeps the role it was made with, they log in again to get the new one's."""
        if role is not None:
            user.role = role
        if active is not None:
            user.is_active = active
        if active is False or role is not None:
            await self.invalidate_all(session, user, personal_tokens=True)
        user.updated_at = datetime.now(UTC)

    async def publish_versions(self, user: User) -> None:
        await self.revocations.set_version(user.id, TokenType.access, user.access_token_version)
        await self.revocations.set_version(user.id, TokenType.pat, user.pat_version)

    # -- personal access tokens -----------------------------------------------------------

    async def mint_pat(
        self, session: AsyncSession, user: User, name: str, scopes: frozenset[str], days: int
    ) -> tuple[str, PersonalAccessToken]:
        token, token_id, expires = sign_token(
            self.keys,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            subject=user.id,
            role=user.role.value,
            token_type=TokenType.pat,
            lifetime=timedelta(days=days),
            version=user.pat_version,
            scopes=scopes,
        )
        row = PersonalAccessToken(
            id=token_id,
            user_id=user.id,
            name=name,
            scopes=" ".join(sorted(scopes)),
            token_hash=token_hash(token),
            expires_at=expires,
        )
        session.add(row)
        await session.flush()
        return token, row

    async def revoke_pat(self, session: AsyncSession, row: PersonalAccessToken) -> None:
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            await session.flush()
        await self.revocations.revoke_token(row.id, row.expires_at)

    async def sync_revocations(self, session: AsyncSession) -> None:
        """Rewrite Redis from the database (at start, and whenever Redis lost them: ``auth/keeper.py``); last, the
        mark that says they are there."""
        now = datetime.now(UTC)
        for user in (await session.execute(select(User))).scalars():
            await self.publish_versions(user)
        revoked = await session.execute(
            select(PersonalAccessToken).where(
                PersonalAccessToken.revoked_at.is_not(None), PersonalAccessToken.expires_at > now
            )
        )
        for row in revoked.scalars():
            await self.revocations.revoke_token(row.id, row.expires_at)
        await self.revocations.redis.set(SYNCED_KEY, now.isoformat())

    async def revocations_in_redis(self) -> bool:
        """Whether the mark the last :meth:`sync_revocations` left is in Redis (False: Redis lost its data)."""
        return bool(await self.revocations.redis.exists(SYNCED_KEY))
