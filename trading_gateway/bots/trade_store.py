"""Reading a bot's trade database from the gateway, when the bot's API can no longer tell (its process has ended, or
does not answer): its SQLite file, or its own PostgreSQL database (``FREQFLEET_BOT_DB=postgres``) with the URL its
spec carries sealed to this gateway (never one read from the bot's folder, which the bot can write).

Reads only, with a short timeout: a SQLite file opened read-only (WAL: readers never block the bot), a PostgreSQL
session that is read-only. Blocking: call it in a thread from async code.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from shared.bus.messages import BotSpec
from shared.logging import get_logger
from shared.sealing import SealError
from trading_gateway.bots.files import BotFiles, CredentialOpener

log = get_logger(__name__)

CONNECT_TIMEOUT = 3  # seconds


def database_url_of(spec: BotSpec | None, bot_id: str, opener: CredentialOpener | None) -> str | None:
    """The bot's PostgreSQL trade database as its spec names it (sealed to this gateway); None for SQLite (or a spec
    this gateway can't open: then nothing is read rather than a guess)."""
    if spec is None or spec.database is None or opener is None:
        return None
    try:
        return opener.open_database(spec.database, bot_id)
    except SealError:
        return None


def read_rows(files: BotFiles, database_url: str | None, sql: str) -> list[tuple[Any, ...]] | None:
    """The rows of ``sql`` (portable between SQLite and PostgreSQL) from the bot's trade database; None when it can't
    be read (no file, the server refused or is away)."""
    if database_url is not None:
        return _postgres_rows(files.bot_id, database_url, sql)
    if not files.db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{files.db}?mode=ro", uri=True, timeout=2)) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    except sqlite3.Error as exc:
        log.warning("bot database not readable", bot_id=files.bot_id, error=str(exc))
        return None


def _postgres_rows(bot_id: str, database_url: str, sql: str) -> list[tuple[Any, ...]] | None:
    import psycopg

    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(
            conninfo, connect_timeout=CONNECT_TIMEOUT, options="-c default_transaction_read_only=on"
        ) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    except psycopg.Error as exc:
        log.warning("bot database not readable", bot_id=bot_id, error=type(exc).__name__)
        return None
