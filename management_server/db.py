"""Database engine, sessions and the declarative base."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from management_server.config import ManagementSettings
from shared.logging import get_logger

log = get_logger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, nullable=False
    )


def create_engine(settings: ManagementSettings, *, background: bool = False) -> AsyncEngine:
    """The requests' engine, or (``background``) the background tasks' own, smaller one.

    PostgreSQL failover: with several hosts in ``DATABASE_URL`` and ``target_session_attrs=read-write``, a new
    connection goes to the server that takes writes. A pooled connection to a server that is gone fails its
    pre-ping and is made again; one to a server that no longer takes writes (a primary turned standby, a split)
    fails the statement with ``read-only transaction`` (SQLSTATE 25006): that counts as a lost connection, so the
    pool drops every connection it holds and the next ones find the new primary."""
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_background_pool_size if background else settings.database_pool_size,
        max_overflow=2 if background else 10,
        pool_pre_ping=True,
        connect_args={
            "timeout": 5,
            "server_settings": {"application_name": "freqfleet-background" if background else "freqfleet"},
        },
    )
    event.listen(engine.sync_engine, "handle_error", _read_only_is_a_lost_server)
    return engine


READ_ONLY_SQLSTATE = "25006"


def _read_only_is_a_lost_server(context: ExceptionContext) -> None:
    if getattr(context.original_exception, "sqlstate", None) == READ_ONLY_SQLSTATE:
        context.is_disconnect = True  # the pool is invalidated: every connection is made again


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def fetch_raw(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    """``sql``'s rows read by asyncpg itself on the session's connection (in its transaction if one is open), with
    none of SQLAlchemy's result processing: for large answers written straight to JSON (``bots/listing.py``)."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection  # asyncpg's, under SQLAlchemy's adapter
    assert driver is not None
    rows: list[Any] = await driver.fetch(sql, *args)
    return rows


async def listen(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    *,
    on_connect: Callable[[], None] | None = None,
    what: str = "listener",
) -> None:
    """LISTEN on ``channel`` with a connection of its own until cancelled: ``on_notify(payload)`` per notification,
    ``on_connect()`` each time it (re)connects (what was NOTIFYed meanwhile was missed); a dead connection is noticed
    within 5 s and replaced."""
    while True:
        try:
            async with engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                await raw.add_listener(channel, lambda *args: on_notify(args[-1]))
                if on_connect is not None:
                    on_connect()
                while not raw.is_closed():
                    await asyncio.sleep(5)
                    await raw.execute("SELECT 1")  # notice a dead connection
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug(f"{what} reconnecting", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
