"""Schema migrations and the first admin, shared by ``freqfleet up``, ``migrate`` and the tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from management_server.config import ManagementSettings, normalize_database_url
from management_server.db import create_engine, create_sessionmaker
from management_server.security.passwords import build_hasher
from management_server.users.service import AdminBootstrap, ensure_admin

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(f"alembic.ini not found at {ALEMBIC_INI}: run from a checkout of Freqfleet")
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = normalize_database_url(database_url)
    config.attributes["skip_logging_config"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def bootstrap_admin(settings: ManagementSettings, email: str, password: str | None) -> AdminBootstrap:
    async def run() -> AdminBootstrap:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                return await ensure_admin(session, build_hasher(settings), email, password)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def create_admin(settings: ManagementSettings, email: str, password: str) -> str:
    """Create an admin (``freqfleet create-admin``); an existing user of that email is refused."""
    from management_server.users.models import Role
    from management_server.users.service import create_user, get_by_email

    async def run() -> str:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                if await get_by_email(session, email) is not None:
                    raise ValueError(f"a user with the email {email} exists already")
                user = await create_user(session, build_hasher(settings), email, password, Role.admin)
                await session.commit()
                return str(user.id)
        finally:
            await engine.dispose()

    return asyncio.run(run())
