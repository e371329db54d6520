"""Who is calling: the bearer token verified, the user loaded, scopes checked, refusals audited; and the audit log
bound to the caller (``Audit``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from redis.exceptions import RedisError
from sqlalchemy import update

from management_server.audit.service import Actor
from management_server.auth.models import PersonalAccessToken
from management_server.auth.principals import PrincipalFacts, UserFacts
from management_server.auth.service import scopes_of_role, token_hash
from management_server.db import SessionDep
from management_server.deps import (
    AnonymousAudit,
    RequestAudit,
)
from management_server.users.models import Role, User
from management_server.users.viewer import Viewer
from shared.auth import InvalidToken, TokenClaims, TokenType, TokenVerifier
from shared.auth.claims import Scope
from shared.auth.revocation import RevocationStore

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    scopes={"read": "Read bots, trades, models", "trade": "Control bots", "admin": "Administer users and the fleet"},
)

UNAUTHORIZED = "Not authenticated: log in and send the access token as 'Authorization: Bearer <token>'."
INVALID = "Invalid or expired token: log in again."
ACCESS_INVALIDATED = "access token invalidated (logout, password change or account change)"  # audit reasons
PAT_INVALID = "personal access token revoked, expired or invalidated (password change or account change)"
REVOCATION_TIMEOUT = 0.5  # seconds Redis has to say whether a token was revoked (then the database decides)


def pat_scopes_allowed(role: Role) -> frozenset[str]:
    """What a personal access token of this role may carry."""
    if role is Role.admin:
        return frozenset({Scope.read, Scope.trade, Scope.admin})
    return frozenset({Scope.read, Scope.trade})


@dataclass(frozen=True)
class Principal:
    user: UserFacts  # what authentication read of the user; a route that changes the user loads the row
    claims: TokenClaims
    scopes: frozenset[str]
    actor: Actor  # taken at authentication: still usable after the request's session rolled back

    @property
    def is_admin(self) -> bool:
        """The one place that decides admin power: the role admin and the token's admin scope."""
        return self.user.role is Role.admin and Scope.admin in self.scopes

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.user, self.is_admin)


async def get_principal(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    audit: AnonymousAudit,
) -> Principal:
    # The lifespan's services are read here rather than taken as dependencies of their own: every authenticated
    # request runs this, and each dependency costs FastAPI several microseconds per request.
    state = request.app.state
    verifier: TokenVerifier = state.token_verifier
    facts: PrincipalFacts = state.principal_facts
    revocations: RevocationStore = state.revocations
    if not token:
        raise await audit.deny(401, UNAUTHORIZED, "no bearer token")
    try:
        claims = await verifier.verify(token)
    except InvalidToken as exc:
        raise await audit.deny(401, INVALID, f"invalid token: {exc}") from None
    # Revoked and invalidated tokens are in Redis, written by whichever process revoked them: asked every time, so
    # what the database read below remembers (auth/principals.py) never outlives a revocation. Without an answer
    # from Redis the database alone decides, read afresh.
    try:
        async with asyncio.timeout(REVOCATION_TIMEOUT):
            revoked = await revocations.revocation_reason(claims)
        fresh = False
    except (RedisError, OSError, TimeoutError):
        revoked, fresh = None, True
    user = await facts.user(session, claims, fresh=fresh or bool(revoked))
    if user is None or not user.is_active:
        reason = "token of an unknown user" if user is None else "token of a disabled user"
        raise await audit.deny(401, INVALID, reason, Actor(claims.subject, user.email if user else "unknown"))
    actor = Actor(user.id, user.email)
    if revoked:
        reason = ACCESS_INVALIDATED if claims.token_type is TokenType.access else PAT_INVALID
        raise await audit.deny(401, INVALID, reason, actor)
    if claims.token_type is TokenType.access:
        if claims.version < user.access_token_version:
            raise await audit.deny(401, INVALID, ACCESS_INVALIDATED, actor)
        scopes = scopes_of_role(user.role)
    else:
        pat = await facts.pat(session, claims.token_id, fresh=fresh)
        now = datetime.now(UTC)
        if (
            pat is None
            or pat.user_id != user.id
            or pat.token_hash != token_hash(token)
            or pat.revoked_at is not None
            or pat.expires_at <= now
            or claims.version < user.pat_version
        ):
            raise await audit.deny(401, INVALID, PAT_INVALID, actor)
        if pat.last_used_at is None or now - pat.last_used_at > timedelta(minutes=1):
            await session.execute(
                update(PersonalAccessToken).where(PersonalAccessToken.id == claims.token_id).values(last_used_at=now)
            )
            await session.commit()
            facts.used(claims.token_id, pat, now)
        scopes = claims.scopes & pat_scopes_allowed(user.role)
    limiter = getattr(state, "enforce_user_limit", None)  # set when rate limits are enabled
    if limiter is not None:
        await limiter(request, str(user.id))
    return Principal(user, claims, scopes, actor)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def current_user_row(principal: CurrentPrincipal, session: SessionDep) -> User:
    """The caller's own row, for a route that changes it (the principal holds what authentication read of it)."""
    user = await session.get(User, principal.user.id)
    if user is None:
        raise HTTPException(401, INVALID, headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUserRow = Annotated[User, Depends(current_user_row)]


def require_scope(scope: Scope) -> object:
    async def check(principal: CurrentPrincipal, audit: AnonymousAudit) -> Principal:
        if scope not in principal.scopes:
            raise await audit.deny(
                403, f"This token lacks the '{scope.value}' scope.", f"missing scope {scope.value}", principal.actor
            )
        return principal

    return Depends(check)


async def get_admin(principal: CurrentPrincipal, audit: AnonymousAudit) -> Principal:
    if not principal.is_admin:
        raise await audit.deny(403, "Only an admin may do this.", "admin route", principal.actor)
    return principal


Reader = Annotated[Principal, require_scope(Scope.read)]
Trader = Annotated[Principal, require_scope(Scope.trade)]
AdminPrincipal = Annotated[Principal, Depends(get_admin)]


async def _caller_audit(principal: CurrentPrincipal, audit: AnonymousAudit) -> RequestAudit:
    return audit.by(principal.actor)


# The audit log bound to the caller (the principal's actor) and the client's IP: ``audit.record(...)`` after the
# fact or for a refusal, ``audit.add(session, ...)`` in the request's transaction.
Audit = Annotated[RequestAudit, Depends(_caller_audit)]
