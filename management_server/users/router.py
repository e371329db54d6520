"""/api/v1/users: the caller's own account and tokens; admin user management."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import func, select

from management_server.audit.models import Outcome
from management_server.audit.service import AuditLog
from management_server.auth.deps import AdminPrincipal, CurrentPrincipal, client_ip, pat_scopes_allowed
from management_server.auth.models import PersonalAccessToken
from management_server.auth.schemas import PatCreate, PatCreated, PatOut
from management_server.auth.service import AuthError, AuthService
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.security.passwords import password_problems
from management_server.users.models import Role, User
from management_server.users.schemas import PasswordChange, UserCreate, UserOut, UserPage, UserUpdate
from management_server.users.service import AccountRefused, open_account

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=errors(400, 401, 403, 404, 409, 429))


def _services(request: Request) -> tuple[AuthService, AuditLog]:
    return request.app.state.auth, request.app.state.audit


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    body: PasswordChange, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    """Change your password; every token you hold (personal tokens included) stops working."""
    auth, audit = _services(request)
    if problems := password_problems(body.new_password, principal.user.email):
        raise HTTPException(400, "Password refused: " + "; ".join(problems) + ".")
    try:
        await auth.change_password(session, principal.user, body.current_password, body.new_password)
    except AuthError as exc:
        await audit.record(
            "user.password_change", Outcome.failure, principal.actor, reason=exc.reason, ip=client_ip(request)
        )
        raise HTTPException(403, "The current password is not right.") from None
    await session.commit()
    await audit.record(
        "user.password_change",
        Outcome.success,
        principal.actor,
        target_type="user",
        target_id=principal.user.id,
        ip=client_ip(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/tokens", response_model=list[PatOut])
async def list_tokens(session: SessionDep, principal: CurrentPrincipal) -> list[PatOut]:
    rows = await session.execute(
        select(PersonalAccessToken)
        .where(PersonalAccessToken.user_id == principal.user.id)
        .order_by(PersonalAccessToken.created_at.desc())
    )
    return [PatOut.model_validate(r) for r in rows.scalars()]


@router.post("/me/tokens", status_code=status.HTTP_201_CREATED, response_model=PatCreated, responses=errors(400))
async def create_token(
    body: PatCreate, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> PatCreated:
    """Mint a personal access token for a machine or an AI agent. The token is shown once."""
    auth, audit = _services(request)
    wanted = frozenset(s.value for s in body.scopes)
    if not wanted <= pat_scopes_allowed(principal.user.role):
        raise HTTPException(403, "Only an admin may mint a token with the 'admin' scope.")
    if principal.claims.token_type.value == "pat":
        raise HTTPException(403, "A personal access token can't mint other tokens: log in to do this.")
    days = body.expires_in_days
    if days > (longest := request.app.state.settings.pat_max_days):
        raise HTTPException(
            400, f"expires_in_days may be at most {longest} on this server (FREQFLEET_PAT_MAX_DAYS): ask for fewer."
        )
    token, row = await auth.mint_pat(session, principal.user, body.name, wanted, days)
    await session.commit()
    await audit.record(
        "token.create",
        Outcome.success,
        principal.actor,
        target_type="token",
        target_id=row.id,
        ip=client_ip(request),
        details={"name": row.name, "scopes": row.scopes},
    )
    return PatCreated.model_validate({**PatOut.model_validate(row).model_dump(), "token": token})


@router.delete("/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    token_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    auth, audit = _services(request)
    row = await session.get(PersonalAccessToken, token_id)
    if row is None or row.user_id != principal.user.id:
        raise HTTPException(404, "No such token.")
    await auth.revoke_pat(session, row)
    await session.commit()
    await audit.record(
        "token.revoke", Outcome.success, principal.actor, target_type="token", target_id=row.id, ip=client_ip(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- admin --------------------------------------------------------------------------------


@router.get("", response_model=UserPage)
async def list_users(
    session: SessionDep,
    _: AdminPrincipal,
    role: Role | None = None,
    is_active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> UserPage:
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(query.order_by(User.created_at, User.id).limit(limit).offset(offset))
    return UserPage(items=[UserOut.model_validate(u) for u in rows.scalars()], total=total)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def admin_create_user(body: UserCreate, request: Request, session: SessionDep, admin: AdminPrincipal) -> UserOut:
    _, audit = _services(request)
    try:
        user = await open_account(session, request.app.state.password_hasher, body.email, body.password, body.role)
    except AccountRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    await audit.record(
        "user.create",
        Outcome.success,
        admin.actor,
        target_type="user",
        target_id=user.id,
        ip=client_ip(request),
        details={"role": user.role.value},
    )
    return UserOut.model_validate(user)


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: uuid.UUID, session: SessionDep, _: AdminPrincipal) -> UserOut:
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "No such user.")
    return UserOut.model_validate(user)


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, request: Request, session: SessionDep, admin: AdminPrincipal
) -> UserOut:
    """Change a user's role or disable them; every token of theirs (access, refresh, personal) stops working at
    once: they log in again to get tokens of the new role."""
    auth, audit = _services(request)
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "No such user.")
    if user.id == admin.user.id and (body.is_active is False or (body.role and body.role is not Role.admin)):
        raise HTTPException(409, "You can't disable or demote yourself: ask another admin.")
    changes = body.model_dump(exclude_none=True, mode="json")
    if body.role is not None:
        user.role = body.role
    if body.is_active is not None:
        user.is_active = body.is_active
    if body.is_active is False or body.role is not None:
        # Every token of theirs ends, personal access tokens included: a token keeps the role it was made with.
        await auth.invalidate_all(session, user, personal_tokens=True)
    user.updated_at = datetime.now(UTC)
    await session.commit()
    await audit.record(
        "user.update",
        Outcome.success,
        admin.actor,
        target_type="user",
        target_id=user.id,
        ip=client_ip(request),
        details=changes,
    )
    return UserOut.model_validate(user)
