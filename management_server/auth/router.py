"""/api/v1/auth: register, log in, refresh, log out; /.well-known/jwks.json."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from redis.exceptions import RedisError

from management_server.audit.models import Outcome
from management_server.audit.service import Actor, AuditLog
from management_server.auth.deps import CurrentPrincipal, client_ip
from management_server.auth.schemas import LogoutIn, RefreshIn, RegisterIn, TokenOut
from management_server.auth.service import AuthError, AuthService, TokenPair
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.security.login_throttle import LoginThrottle, LoginThrottled
from management_server.users.schemas import UserOut
from management_server.users.service import AccountRefused, open_account

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=errors(400, 401, 429, 503))
jwks_router = APIRouter(tags=["auth"])

BAD_LOGIN = "Incorrect email or password."


def _auth(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


def _audit(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.audit
    return audit


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@jwks_router.get("/.well-known/jwks.json", summary="Public keys that verify Freqfleet tokens")
async def jwks(request: Request) -> dict[str, Any]:
    keys: dict[str, Any] = request.app.state.keys.jwks()
    return keys


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(403, 409),
)
async def register(body: RegisterIn, request: Request, session: SessionDep) -> UserOut:
    settings = request.app.state.settings
    audit = _audit(request)
    if not settings.registration_open:
        await audit.record(
            "user.register", Outcome.denied, Actor.anonymous(), reason="registration closed", ip=client_ip(request)
        )
        raise HTTPException(403, "Registration is closed: ask an admin for an account.")
    try:
        user = await open_account(session, request.app.state.password_hasher, body.email, body.password)
    except AccountRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    await audit.record(
        "user.register",
        Outcome.success,
        Actor(user.id, user.email),
        target_type="user",
        target_id=user.id,
        ip=client_ip(request),
    )
    return UserOut.model_validate(user)


@router.post(
    "/token",
    response_model=TokenOut,
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, session: SessionDep
) -> TokenOut:
    """Log in with email (as `username`) and password; returns an access and a refresh token."""
    email, ip = form.username.strip().lower()[:320], client_ip(request) or "unknown"
    audit = _audit(request)
    throttle: LoginThrottle = request.app.state.login_throttle
    try:
        await throttle.check(email, ip)
    except LoginThrottled as exc:
        await audit.record(
            "auth.login",
            Outcome.denied,
            Actor(None, email),
            reason="throttled",
            ip=ip,
            details={"retry_after": exc.retry_after},
        )
        raise
    except RedisError:
        # Without the throttle's counters, logins would be unthrottled: refuse them instead.
        raise HTTPException(503, "Login is unavailable for a moment: try again shortly.") from None
    try:
        user = await _auth(request).authenticate(session, email, form.password)
    except AuthError as exc:
        await throttle.failed(email, ip)
        actor = Actor(exc.user.id, exc.user.email) if exc.user else Actor(None, email)
        await audit.record("auth.login", Outcome.failure, actor, reason=exc.reason, ip=ip)
        raise HTTPException(401, BAD_LOGIN, headers={"WWW-Authenticate": "Bearer"}) from None
    pair = await _auth(request).start_session(session, user)
    await session.commit()
    await throttle.succeeded(email, ip)
    await audit.record("auth.login", Outcome.success, Actor(user.id, user.email), ip=ip)
    return _tokens(pair)


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, request: Request, session: SessionDep) -> TokenOut:
    """Trade a refresh token for a new pair. Each refresh token works once."""
    audit = _audit(request)
    try:
        pair = await _auth(request).refresh(session, body.refresh_token)
    except AuthError as exc:
        await session.commit()  # a detected reuse revokes the family even though this request fails
        actor = Actor(exc.user.id, exc.user.email) if exc.user else Actor.anonymous()
        await audit.record("auth.refresh", Outcome.denied, actor, reason=exc.reason, ip=client_ip(request))
        raise HTTPException(
            401, "Invalid refresh token: log in again.", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    await session.commit()
    await audit.record("auth.refresh", Outcome.success, Actor(pair.user.id, pair.user.email), ip=client_ip(request))
    return _tokens(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    body: Annotated[LogoutIn | None, Body()] = None,
) -> Response:
    """End this login: its refresh tokens and every access token of the user stop working at once."""
    await _auth(request).logout(session, principal.user, body.refresh_token if body else None)
    await session.commit()
    await _audit(request).record("auth.logout", Outcome.success, principal.actor, ip=client_ip(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
