"""The dashboard's login: the access token lives in the page's memory, the refresh token in a cookie no script reads.

- ``POST /api/v1/auth/session`` (a form with ``username`` and ``password``, as ``/token``): a login. The answer has
  the access token and sets two cookies: ``freqfleet_refresh``, the refresh token (``HttpOnly``, ``SameSite=Strict``,
  sent only to ``/api/v1/auth/session``, ``Secure`` outside development), and ``freqfleet_csrf``, a random value the
  page reads and sends back as ``X-CSRF-Token``.
- ``POST /api/v1/auth/session/refresh``: the cookie's refresh token traded for a new pair (rotated as ``/refresh``:
  a used one presented again ends the login everywhere); the new access token in the answer, the new refresh token
  in the cookie. It needs ``X-CSRF-Token`` equal to the CSRF cookie: another site's page can't read that cookie, and
  with ``SameSite=Strict`` its requests carry no cookie at all (double submit on top of SameSite).
- ``DELETE /api/v1/auth/session``: log out (as ``/logout``) and clear both cookies.

A page that reloads asks ``/session/refresh`` for an access token; when that fails, the person logs in again.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Header, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from management_server.audit.models import Outcome
from management_server.audit.service import Actor
from management_server.auth.deps import Audit, CurrentUserRow
from management_server.auth.router import log_in
from management_server.auth.service import AuthError, TokenPair
from management_server.config import ManagementSettings
from management_server.db import SessionDep
from management_server.deps import AnonymousAudit, AuthServiceDep, ClientIp, LoginThrottleDep, SettingsDep
from management_server.errors import errors
from shared.settings import Environment

router = APIRouter(prefix="/api/v1/auth/session", tags=["auth"], responses=errors(400, 401, 403, 429, 503))

REFRESH_COOKIE = "freqfleet_refresh"
CSRF_COOKIE = "freqfleet_csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/api/v1/auth/session"
NO_SESSION = "Your session has ended: log in again."
BAD_CSRF = f"Missing or wrong {CSRF_HEADER}: send the value of the {CSRF_COOKIE} cookie."


class SessionOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires: refresh the session before then.")
    csrf_token: str = Field(description=f"Send it as {CSRF_HEADER} to refresh or end the session.")


def _secure(settings: ManagementSettings) -> bool:
    return settings.env not in (Environment.development, Environment.test)


def _start(response: Response, pair: TokenPair, settings: ManagementSettings) -> SessionOut:
    """The answer of a new or refreshed session, its cookies set (they last as long as the login may)."""
    max_age, secure = settings.refresh_family_days * 86400, _secure(settings)
    csrf = secrets.token_urlsafe(32)
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=secure, httponly=False, samesite="strict")
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(access_token=pair.access_token, expires_in=pair.expires_in, csrf_token=csrf)


def _end(response: Response, settings: ManagementSettings) -> None:
    secure = _secure(settings)
    response.delete_cookie(REFRESH_COOKIE, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="strict")


def _csrf(
    header: Annotated[str | None, Header(alias=CSRF_HEADER, max_length=200)] = None,
    cookie: Annotated[str | None, Cookie(alias=CSRF_COOKIE, max_length=200)] = None,
) -> None:
    if not header or not cookie or not secrets.compare_digest(header, cookie):
        raise HTTPException(403, BAD_CSRF)


Csrf = Annotated[None, Depends(_csrf)]


@router.post("", response_model=SessionOut)
async def start_session(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    response: Response,
    session: SessionDep,
    auth: AuthServiceDep,
    throttle: LoginThrottleDep,
    client: ClientIp,
    settings: SettingsDep,
    audit: AnonymousAudit,
) -> SessionOut:
    """Log in for the dashboard: the access token in the answer, the refresh token in an HttpOnly cookie."""
    pair = await log_in(form, session, auth, throttle, client, audit)
    return _start(response, pair, settings)


@router.post("/refresh", response_model=SessionOut)
async def refresh_session(
    _: Csrf,
    response: Response,
    session: SessionDep,
    auth: AuthServiceDep,
    settings: SettingsDep,
    audit: AnonymousAudit,
    refresh_token: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, max_length=512)] = None,
) -> SessionOut:
    """A new access token for the dashboard, from the session's cookie (rotated)."""
    if not refresh_token:
        raise HTTPException(401, NO_SESSION)
    try:
        pair = await auth.refresh(session, refresh_token)
    except AuthError as exc:
        await session.commit()  # a detected reuse revokes the family even though this request fails
        actor = Actor(exc.user.id, exc.user.email) if exc.user else Actor.anonymous()
        await audit.record("auth.refresh", Outcome.denied, reason=exc.reason, actor=actor)
        raise HTTPException(401, NO_SESSION) from None
    await session.commit()
    await audit.record("auth.refresh", Outcome.success, actor=Actor(pair.user.id, pair.user.email))
    return _start(response, pair, settings)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(
    _: Csrf,
    session: SessionDep,
    user: CurrentUserRow,
    auth: AuthServiceDep,
    settings: SettingsDep,
    audit: Audit,
    refresh_token: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, max_length=512)] = None,
) -> Response:
    """Log out of the dashboard: this login ends (its refresh tokens and the user's access tokens), cookies cleared."""
    await auth.logout(session, user, refresh_token)
    await session.commit()
    await audit.record("auth.logout", Outcome.success)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _end(response, settings)
    return response
