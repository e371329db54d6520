"""The first admin's bootstrap against a real database."""

from __future__ import annotations

from sqlalchemy import select

from management_server.config import ManagementSettings
from management_server.db import create_engine, create_sessionmaker
from management_server.security.passwords import build_hasher, password_problems, verify_password
from management_server.users.models import Role, User
from management_server.users.service import create_user, ensure_admin


async def test_ensure_admin_creates_once_and_never_resets(management_settings: ManagementSettings) -> None:
    engine = create_engine(management_settings)
    hasher = build_hasher(management_settings)
    try:
        async with create_sessionmaker(engine)() as session:
            first = await ensure_admin(session, hasher, "Root@Example.com", None)
            assert first.created
            assert first.email == "root@example.com"
            assert first.generated_password is not None
            assert len(first.generated_password) >= 20

            again = await ensure_admin(session, hasher, "root@example.com", "another-password-123")
            assert not again.created
            assert again.generated_password is None

            users = (await session.execute(select(User))).scalars().all()
            assert len(users) == 1
            assert users[0].role is Role.admin
            assert users[0].password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
            assert verify_password(hasher, users[0].password_hash, first.generated_password)
            assert not verify_password(hasher, users[0].password_hash, "another-password-123")
    finally:
        await engine.dispose()


async def test_ensure_admin_promotes_an_existing_user(management_settings: ManagementSettings) -> None:
    engine = create_engine(management_settings)
    hasher = build_hasher(management_settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await create_user(session, hasher, "trader@example.com", "trader-password-1")
            await session.commit()
            result = await ensure_admin(session, hasher, "trader@example.com", None)
            assert result.created
            assert result.generated_password is None
            user = (await session.execute(select(User))).scalar_one()
            assert user.role is Role.admin
            assert verify_password(hasher, user.password_hash, "trader-password-1")
    finally:
        await engine.dispose()


def test_password_problems_are_stated() -> None:
    assert password_problems("Kx9#") == ["the password must have at least 12 characters"]
    assert password_problems("Kx9#" * 33) == ["the password must have at most 128 characters"]
    assert password_problems("tangerine sky over lisbon") == []
    # From the shipped list of common passwords, whatever the case.
    assert password_problems("1qaz2wsx3edc") == ["the password is too common: choose one that others don't use"]
    assert password_problems("QWERTY123456") == ["the password is too common: choose one that others don't use"]
    assert password_problems("aaaaaaaaaaaaaa") == ["the password is too common: choose one that others don't use"]
    assert password_problems("mallory.the.trader@example.com", "Mallory.The.Trader@example.com") == [
        "the password must not be your email address"
    ]
