"""`freqfleet bots migrate-db`: a bot from before FREQFLEET_BOT_DB=postgres, its trades (50 closed, 2 open, with
their orders) in the SQLite file in its folder on its gateway, moved into a PostgreSQL database of its own by the
command; every trade and order equal afterwards, and the bot, started again, trades on from PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from freqfleet.embedded import EmbeddedPostgres
from shared.trade_db import database_name
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, Stack, bearer, wait_bot
from tests.e2e.test_bots import approved_bot, trades
from tests.e2e.test_cli import cli, ok, refused
from tests.helpers import async_wait_for

pytestmark = pytest.mark.slow

TRADE_COLUMNS = "id, pair, is_open, open_rate, close_rate, amount, stake_amount, open_date, close_date, exit_reason"
ORDER_COLUMNS = "id, ft_trade_id, order_id, ft_order_side, status, price, amount, filled, cost, order_date"


async def _old_sqlite_bot(stack: Stack, postgres: EmbeddedPostgres, bot_id: str) -> Path:
    """Make the (stopped, never started) bot one from before PostgreSQL trade databases: no database of its own,
    placed on the stack's gateway, its trades in SQLite there. The SQLite file's path."""
    name = database_name(uuid.UUID(bot_id))
    admin = await asyncpg.connect(postgres.provisioner_url())
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE "{name}"')
    finally:
        await admin.close()
    app = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await app.execute("DELETE FROM bot_databases WHERE bot_id = $1", uuid.UUID(bot_id))
        await app.execute(
            "UPDATE bots SET trade_db = 'sqlite', gateway_id = $2 WHERE id = $1",
            uuid.UUID(bot_id),
            stack.gateway_id,
        )
    finally:
        await app.close()
    folder = stack.bots_root / bot_id
    folder.mkdir(mode=0o700, parents=True)
    db = folder / "tradesv3.sqlite"
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.freqtrade_db", f"sqlite:///{db}", "50", "2", cwd=ROOT
    )
    assert await made.wait() == 0
    return db


def _sqlite_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


async def _postgres_rows(postgres: EmbeddedPostgres, name: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(postgres.provisioner_url().rsplit("/", 1)[0] + f"/{name}")
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def _same(sqlite_rows: list[tuple[Any, ...]], pg_rows: list[tuple[Any, ...]]) -> None:
    """Equal row for row (SQLite's dates are text, PostgreSQL's datetimes; its booleans 0 and 1)."""

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=None)
        if isinstance(value, str) and value[:4].isdigit():
            return datetime.fromisoformat(value)
        return value

    assert len(sqlite_rows) == len(pg_rows)
    for mine, theirs in zip(sqlite_rows, pg_rows, strict=True):
        assert tuple(plain(v) for v in mine) == tuple(plain(v) for v in theirs), (mine, theirs)


async def test_migrate_db_moves_every_trade_and_order_and_the_bot_trades_on_from_postgres(
    stack: Stack, client: httpx.AsyncClient, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    admin = bearer(stack.admin_token)
    bot_id = await approved_bot(client, stack, admin, "migrating")
    db = await _old_sqlite_bot(stack, postgres, bot_id)
    before = {
        "trades": _sqlite_rows(db, f"SELECT {TRADE_COLUMNS} FROM trades ORDER BY id"),  # noqa: S608
        "orders": _sqlite_rows(db, f"SELECT {ORDER_COLUMNS} FROM orders ORDER BY id"),  # noqa: S608
    }
    assert (len(before["trades"]), sum(1 for t in before["trades"] if t[2])) == (52, 2)
    assert (await client.get(f"/bots/{bot_id}", headers=admin)).json()["trade_db"] == "sqlite"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli(tmp_path, stack.management, *args, stdin=stdin)

    ok(run("login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=ADMIN_PASSWORD + "\n"))
    assert "name the bots to migrate, or --all" in refused(run("bots", "migrate-db"))
    moved = ok(run("bots", "migrate-db", "migrating"))
    assert "postgres" in moved
    assert "52 trades" in moved
    assert "102 orders" in moved  # 50 closed trades' entries and exits, 2 open trades' entries

    bot = (await client.get(f"/bots/{bot_id}", headers=admin)).json()
    assert (bot["trade_db"], bot["last_error"]) == ("postgres", None)
    name = database_name(uuid.UUID(bot_id))
    _same(before["trades"], await _postgres_rows(postgres, name, f"SELECT {TRADE_COLUMNS} FROM trades ORDER BY id"))  # noqa: S608
    _same(before["orders"], await _postgres_rows(postgres, name, f"SELECT {ORDER_COLUMNS} FROM orders ORDER BY id"))  # noqa: S608
    assert not db.exists()  # kept beside it under another name, never read as the bot's database again
    assert len(list(db.parent.glob("tradesv3.sqlite.migrated-*"))) == 1
    again = refused(run("bots", "migrate-db", "migrating"))
    assert "in PostgreSQL already" in again

    # Started: Freqtrade reads its trades from PostgreSQL (its two open trades among them) and reports them.
    started = await client.post(f"/bots/{bot_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    await wait_bot(client, admin, bot_id, "running", timeout=60)

    async def reported() -> list[dict[str, Any]] | None:
        listed = await trades(client, admin, bot_id)
        return listed if {51, 52} <= {t["trade_id"] for t in listed} else None

    listed = await async_wait_for(reported, timeout=60, what="the migrated open trades reported by the bot")
    opened = {t["trade_id"]: t for t in listed}
    assert opened[51]["open_rate"] == pytest.approx(before["trades"][50][3])
    stopped = await client.post(f"/bots/{bot_id}/stop", headers=admin)
    assert stopped.status_code == 200, stopped.text
    await wait_bot(client, admin, bot_id, "stopped", timeout=60)
