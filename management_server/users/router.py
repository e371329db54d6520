"""/api/v1/users: the caller's own account and tokens; admin user management."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from management_server.audit.models import Outcome
from management_server.auth.deps import (
    AdminPrincipal,
    Audit,
    CurrentPrincipal,
    CurrentUserRow,
    current_user_row,
    pat_scopes_allowed,
)
from management_server.auth.schemas import PatCreate, PatCreated, PatOut
from management_server.auth.service import AuthError, personal_token, personal_tokens
from management_server.db import SessionDep
from management_server.deps import AuthServiceDep, PasswordHasherDep, SettingsDep, found
from management_server.errors import errors
from management_server.security.passwords import password_problems
from management_server.users import service
from management_server.users.deps import ManagedUser
from management_server.users.models import Role
from management_server.users.schemas import PasswordChange, UserCreate, UserOut, UserPage, UserUpdate

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=errors(400, 401, 403, 404, 409, 429))


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    body: PasswordChange, session: SessionDep, user: CurrentUserRow, auth: AuthServiceDep, audit: Audit
) -> Response:
    """Change your password; every token you hold (personal tokens included) stops working."""
    if problems := password_problems(body.new_password, user.email):
        raise HTTPException(400, "Password refused: " + "; ".join(problems) + ".")
    try:
        await auth.change_password(session, user, body.current_password, body.new_password)
    except AuthError as exc:
        await audit.record("user.password_change", Outcome.failure, reason=exc.reason)
        raise HTTPException(403, "The current password is not right.") from None
    await session.commit()
    await audit.record("user.password_change", Outcome.success, target_type="user", target_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/tokens", response_model=list[PatOut])
async def list_tokens(session: SessionDep, principal: CurrentPrincipal) -> list[PatOut]:
    return [PatOut.model_validate(r) for r in await personal_tokens(session, principal.user.id)]


@router.post("/me/tokens", status_code=status.HTTP_201_CREATED, response_model=PatCreated, responses=errors(400))
async def create_token(
    body: PatCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    auth: AuthServiceDep,
    audit: Audit,
) -> PatCreated:
    """Mint a personal access token for a machine or an AI agent. The token is shown once."""
    wanted = frozenset(s.value for s in body.scopes)
    if not wanted <= pat_scopes_allowed(principal.user.role):
        raise HTTPException(403, "Only an admin may mint a token with the 'admin' scope.")
    if principal.claims.token_type.value == "pat":
        raise HTTPException(403, "A personal access token can't mint other tokens: log in to do this.")
    days = body.expires_in_days
    if days > (longest := settings.pat_max_days):
        raise HTTPException(
            400, f"expires_in_days may be at most {longest} on this server (FREQFLEET_PAT_MAX_DAYS): ask for fewer."
        )
    user = await current_user_row(principal, session)
    token, row = await auth.mint_pat(session, user, body.name, wanted, days)
    await session.commit()
    await audit.record(
        "token.create",
        Outcome.success,
        target_type="token",
        target_id=row.id,
        details={"name": row.name, "scopes": row.scopes},
    )
    return PatCreated.model_validate({**PatOut.model_validate(row).model_dump(), "token": token})


@router.delete("/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    token_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, auth: AuthServiceDep, audit: Audit
) -> Response:
    row = found(await personal_token(session, principal.user.id, token_id), "No such token.")
    await auth.revoke_pat(session, row)
    await session.commit()
    await audit.record("token.revoke", Outcome.success, target_type="token", target_id=row.id)
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
    users, total = await service.list_users(session, role, is_active, limit, offset)
    return UserPage(items=[UserOut.model_validate(u) for u in users], total=total)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def admin_create_user(
    body: UserCreate, session: SessionDep, admin: AdminPrincipal, hasher: PasswordHasherDep, audit: Audit
) -> UserOut:
    try:
        user = await service.open_account(session, hasher, body.email, body.password, body.role)
    except service.AccountRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    await session.commit()
    await audit.record(
        "user.create", Outcome.success, target_type="user", target_id=user.id, details={"role": user.role.value}
    )
    return UserOut.model_validate(user)


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user: ManagedUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(
    body: UserUpdate, user: ManagedUser, session: SessionDep, admin: AdminPrincipal, auth: AuthServiceDep, audit: Audit
) -> UserOut:
    """Change a user's role or disable them; every token of theirs (access, refresh, personal) stops working at
    once: they log in again to get tokens of the new role."""
    if user.id == admin.user.id and (body.is_active is False or (body.role and body.role is not Role.admin)):
        raise HTTPException(409, "You can't disable or demote yourself: ask another admin.")
    changes = body.model_dump(exclude_none=True, mode="json")
    await auth.change_account(session, user, body.role, body.is_active)
    await session.commit()
    await audit.record("user.update", Outcome.success, target_type="user", target_id=user.id, details=changes)
    return UserOut.model_validate(user)
