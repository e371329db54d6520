"""The copy of a bot's SQLite trades into PostgreSQL, and the check that proves it: a real Freqtrade database (50
closed trades, 2 open, their orders) into a real bot database on the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from freqfleet.embedded import EmbeddedPostgres
from management_server.botdb.service import Provisioner
from management_server.config import ManagementSettings
from shared.settings import Environment
from shared.trade_db import bot_url, database_name
from shared.trade_db_copy import CopyError, verify

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[2]


def _copy(source: str, target: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-I", str(ROOT / "shared" / "trade_db_copy.py")],
        input=json.dumps({"from": source, "to": target}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


async def test_every_row_is_copied_checked_and_a_changed_row_is_found(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    provisioner = Provisioner.from_settings(
        ManagementSettings(
            env=Environment.test,
            data_dir=tmp_path,
            bot_db="postgres",
            bot_db_admin_url=SecretStr(postgres.provisioner_url()),
        )
    )
    assert provisioner is not None
    name, password = database_name(uuid.uuid4()), secrets.token_urlsafe(32)
    await provisioner.create(name, password)
    try:
        sqlite = f"sqlite:///{tmp_path / 'tradesv3.sqlite'}"
        argv = [sys.executable, "-m", "tests.freqtrade_db", sqlite, "50", "2"]
        await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, check=True)
        target = bot_url(name, password, "127.0.0.1", postgres.port)

        report = await asyncio.to_thread(_copy, sqlite, target)
        assert report["ok"] is True, report
        rows = report["rows"]
        assert isinstance(rows, dict)
        assert (rows["trades"], rows["orders"]) == (52, 102)
        assert verify(sqlite, target) == rows  # read back independently: the same

        # A copy is never merged into a database that holds trades; the password never shows in a report.
        again = await asyncio.to_thread(_copy, sqlite, target)
        assert again["ok"] is False
        assert "holds 52 trades already" in str(again["error"])
        wrong = await asyncio.to_thread(_copy, sqlite, target.replace(password, "not-the-password"))
        assert wrong["ok"] is False
        assert password not in json.dumps(wrong)

        # One changed value in one order is found, and named.
        conn = await asyncpg.connect(postgres.provisioner_url().rsplit("/", 1)[0] + f"/{name}")
        try:
            await conn.execute("UPDATE orders SET filled = filled / 2 WHERE id = 77")
        finally:
            await conn.close()
        with pytest.raises(CopyError, match="table orders: 102 rows in SQLite, 102 in PostgreSQL, not equal"):
            verify(sqlite, target)
    finally:
        await provisioner.drop(name)
