"""Schema migrations and the first admin, shared by ``freqfleet up``, ``migrate`` and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.config import ManagementSettings, normalize_database_url
from management_server.db import create_engine, create_sessionmaker
from management_server.security.passwords import build_hasher
from management_server.users.service import AdminBootstrap, ensure_admin

T = TypeVar("T")
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


def _in_session(settings: ManagementSettings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _audit(session: AsyncSession, action: str, gateway_id: str, details: dict[str, object]) -> None:
    """An audit row of the command line's own (no user is its actor)."""
    from management_server.audit.models import AuditEntry, Outcome

    session.add(
        AuditEntry(
            action=action,
            outcome=Outcome.success.value,
            actor="freqfleet-cli",
            via="system",
            target_type="gateway",
            target_id=gateway_id,
            details=details,
        )
    )


def enroll_gateway(settings: ManagementSettings, enrollment: str) -> tuple[str, bool]:
    """Enroll a gateway from its enrollment line (``freqfleet gateways enroll``, and ``up`` for its own gateway);
    (gateway id, whether it changed anything). Audited like the API's enrollment, with no user as actor."""
    from management_server.gateways.service import enroll

    async def work(session: AsyncSession) -> tuple[str, bool]:
        gateway, changed = await enroll(session, enrollment, None)
        if changed:
            _audit(session, "gateway.enroll", gateway.gateway_id, {"signing_key": gateway.signing_key})
        return gateway.gateway_id, changed

    return _in_session(settings, work)


def revoke_gateway(settings: ManagementSettings, gateway_id: str) -> int:
    """Revoke a gateway (``freqfleet gateways revoke``); how many bots were orphaned."""
    from management_server.gateways.service import revoke

    async def work(session: AsyncSession) -> int:
        _, orphaned = await revoke(session, gateway_id)
        _audit(session, "gateway.revoke", gateway_id, {"bots_orphaned": orphaned})
        return orphaned

    return _in_session(settings, work)


def gateways(settings: ManagementSettings) -> list[tuple[str, ...]]:
    """(id, status, last seen, api url, signing key) of every gateway, for ``freqfleet gateways list``."""
    from management_server.gateways.service import list_gateways

    async def work(session: AsyncSession) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for g in await list_gateways(session):
            seen = g.last_seen_at.isoformat() if g.last_seen_at else "never seen"
            rows.append((g.gateway_id, g.status, seen, g.api_url or "-", g.signing_key or "-"))
        return rows

    return _in_session(settings, work)
