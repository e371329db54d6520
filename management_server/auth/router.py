"""/api/v1/auth: register, log in, refresh, log out; /.well-known/jwks.json."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import Outcome
from management_server.audit.service import Actor
from management_server.auth.deps import Audit, CurrentUserRow
from management_server.auth.schemas import LogoutIn, RefreshIn, RegisterIn, TokenOut
from management_server.auth.service import AuthError, AuthService, TokenPair
from management_server.db import SessionDep
from management_server.deps import (
    AnonymousAudit,
    AuthServiceDep,
    ClientIp,
    LoginThrottleDep,
    PasswordHasherDep,
    RequestAudit,
    SettingsDep,
    TokenKeysDep,
)
from management_server.errors import errors
from management_server.security.login_throttle import LoginThrottle, LoginThrottled
from management_server.users.schemas import UserOut
from management_server.users.service import AccountRefused, open_account

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=errors(400, 401, 429, 503))
jwks_router = APIRouter(tags=["auth"])

BAD_LOGIN = "Incorrect email or password."


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@jwks_router.get("/.well-known/jwks.json", summary="Public keys that verify Freqfleet tokens")
async def jwks(keys: TokenKeysDep) -> dict[str, Any]:
    jwks: dict[str, Any] = keys.jwks()
    return jwks


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(403, 409),
)
async def register(
    body: RegisterIn, session: SessionDep, settings: SettingsDep, hasher: PasswordHasherDep, audit: AnonymousAudit
) -> UserOut:
    if not settings.registration_open:
        await audit.record("user.register", Outcome.denied, reason="registration closed")
        raise HTTPException(403, "Registration is closed: ask an admin for an account.")
    try:
        user = await open_account(session, hasher, body.email, body.password)
    except AccountRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    await audit.record(
        "user.register", Outcome.success, target_type="user", target_id=user.id, actor=Actor(user.id, user.email)
    )
    return UserOut.model_validate(user)


@router.post(
    "/token",
    response_model=TokenOut,
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    auth: AuthServiceDep,
    throttle: LoginThrottleDep,
    client: ClientIp,
    audit: AnonymousAudit,
) -> TokenOut:
    """Log in with email (as `username`) and password; returns an access and a refresh token."""
    return _tokens(await log_in(form, session, auth, throttle, client, audit))


async def log_in(
    form: OAuth2PasswordRequestForm,
    session: AsyncSession,
    auth: AuthService,
    throttle: LoginThrottle,
    client: str | None,
    audit: RequestAudit,
) -> TokenPair:
    """A login's checks, throttle and audit (the API's and the dashboard's); its new token pair, committed."""
    email, ip = form.username.strip().lower()[:320], client or "unknown"
    audit = replace(audit, ip=ip)  # the address the throttle counts by
    try:
        await throttle.check(email, ip)
    except LoginThrottled as exc:
        await audit.record(
            "auth.login",
            Outcome.denied,
            reason="throttled",
            details={"retry_after": exc.retry_after},
            actor=Actor(None, email),
        )
        raise
    except RedisError:
        # Without the throttle's counters, logins would be unthrottled: refuse them instead.
        raise HTTPException(503, "Login is unavailable for a moment: try again shortly.") from None
    try:
        user = await auth.authenticate(session, email, form.password)
    except AuthError as exc:
        await throttle.failed(email, ip)
        actor = Actor(exc.user.id, exc.user.email) if exc.user else Actor(None, email)
        await audit.record("auth.login", Outcome.failure, reason=exc.reason, actor=actor)
        raise HTTPException(401, BAD_LOGIN, headers={"WWW-Authenticate": "Bearer"}) from None
    pair = await auth.start_session(session, user)
    await session.commit()
    await throttle.succeeded(email, ip)
    await audit.record("auth.login", Outcome.success, actor=Actor(user.id, user.email))
    return pair


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, session: SessionDep, auth: AuthServiceDep, audit: AnonymousAudit) -> TokenOut:
    """Trade a refresh token for a new pair. Each refresh token works once."""
    try:
        pair = await auth.refresh(session, body.refresh_token)
    except AuthError as exc:
        await session.commit()  # a detected reuse revokes the family even though this request fails
        actor = Actor(exc.user.id, exc.user.email) if exc.user else Actor.anonymous()
        await audit.record("auth.refresh", Outcome.denied, reason=exc.reason, actor=actor)
        raise HTTPException(
            401, "Invalid refresh token: log in again.", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    await session.commit()
    await audit.record("auth.refresh", Outcome.success, actor=Actor(pair.user.id, pair.user.email))
    return _tokens(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    session: SessionDep,
    user: CurrentUserRow,
    auth: AuthServiceDep,
    audit: Audit,
    body: Annotated[LogoutIn | None, Body()] = None,
) -> Response:
    """End this login: its refresh tokens and every access token of the user stop working at once."""
    await auth.logout(session, user, body.refresh_token if body else None)
    await session.commit()
    await audit.record("auth.logout", Outcome.success)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
