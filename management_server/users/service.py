"""User operations that don't need an HTTP request: the first admin at bootstrap."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.errors import Refused
from management_server.security.passwords import password_problems
from management_server.users.models import Role, User


@dataclass(frozen=True)
class AdminBootstrap:
    email: str
    created: bool
    generated_password: str | None  # shown once to the operator, never stored or logged


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalize_email(email)))
    return result.scalar_one_or_none()


async def list_users(
    session: AsyncSession, role: Role | None, is_active: bool | None, limit: int, offset: int
) -> tuple[list[User], int]:
    """A page of users (oldest first) of this role and state (None: any), and how many there are in all."""
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(query.order_by(User.created_at, User.id).limit(limit).offset(offset))
    return list(rows.scalars()), total


async def count_admins(session: AsyncSession) -> int:
    result = await session.execute(select(func.count()).select_from(User).where(User.role == Role.admin))
    return int(result.scalar_one())


async def create_user(
    session: AsyncSession, hasher: PasswordHasher, email: str, password: str, role: Role = Role.user
) -> User:
    user = User(email=normalize_email(email), password_hash=hasher.hash(password), role=role, is_active=True)
    session.add(user)
    await session.flush()
    return user


class AccountRefused(Refused):
    """A new account can't be made as asked; ``status`` and the message are for the client."""


async def open_account(
    session: AsyncSession, hasher: PasswordHasher, email: str, password: str, role: Role = Role.user
) -> User:
    """A new user after the password policy and the email's uniqueness are checked."""
    if problems := password_problems(password, email):
        raise AccountRefused(400, "Password refused: " + "; ".join(problems) + ".")
    if await get_by_email(session, email) is not None:
        raise AccountRefused(409, "An account with this email exists already.")
    return await create_user(session, hasher, email, password, role)


async def ensure_admin(
    session: AsyncSession, hasher: PasswordHasher, email: str, password: str | None
) -> AdminBootstrap:
    """Create the first admin unless an admin exists already.

    Idempotent: a second start with the same data changes nothing (and never resets a
    password). Without a password, one is generated and returned to be shown once.
    """
    if await count_admins(session) > 0:
        return AdminBootstrap(email=normalize_email(email), created=False, generated_password=None)
    existing = await get_by_email(session, email)
    generated = None
    if existing is not None:
        # A registered user named as the first admin is promoted; their password stays
        # unless the operator gave one.
        existing.role = Role.admin
        existing.is_active = True
        if password is not None:
            existing.password_hash = hasher.hash(password)
    else:
        if password is None:
            generated = secrets.token_urlsafe(18)
            password = generated
        await create_user(session, hasher, email, password, Role.admin)
    await session.commit()
    return AdminBootstrap(email=normalize_email(email), created=True, generated_password=generated)
