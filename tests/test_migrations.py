"""Alembic on real PostgreSQL: a full round trip, and models and migrations agree."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from freqfleet import database
from freqfleet.embedded import APP_ROLE, EmbeddedPostgres
from management_server.orm import Base


def _tables(pg: EmbeddedPostgres, name: str) -> set[str]:
    async def query() -> set[str]:
        conn = await asyncpg.connect(
            host=str(pg.socket_dir), port=pg.port, user="postgres", password=pg.superuser_password, database=name
        )
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(query())


def _create_database(pg: EmbeddedPostgres) -> str:
    name = f"mig_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(
            host=str(pg.socket_dir), port=pg.port, user="postgres", password=pg.superuser_password, database="postgres"
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}" OWNER {APP_ROLE}')
        finally:
            await conn.close()

    asyncio.run(create())
    return name


def test_upgrade_downgrade_upgrade_round_trip(postgres: EmbeddedPostgres) -> None:
    name = _create_database(postgres)
    url = postgres.url(name)
    model_tables = set(Base.metadata.tables)

    database.upgrade(url)
    assert model_tables <= _tables(postgres, name)
    database.downgrade(url, "base")
    assert _tables(postgres, name) == {"alembic_version"}
    database.upgrade(url)
    assert model_tables <= _tables(postgres, name)


def test_models_and_migrations_agree(postgres: EmbeddedPostgres) -> None:
    name = _create_database(postgres)
    url = postgres.url(name)
    database.upgrade(url)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def run() -> list[object]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == [], "models differ from migrations: add a migration (alembic revision --autogenerate)"
