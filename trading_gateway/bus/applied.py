"""The commands this gateway applied, and what it answered each, on its own disk: ``<gateway dir>/applied.sqlite``.

The management server publishes a command again until its answer arrives (``management_server/bus/relay.py``), so a
gateway sees copies: a redelivery after a crash, a republication after Redis lost the answer, a whole stream again
after a ``FLUSHALL`` or a failover to a replica that had not received everything. A record in Redis would be lost
with the rest in those last cases; this one is not. So a copy is recognised, acked without being applied again, and
answered again with the answer the gateway gave (``CommandHandler.answer_again``).

SQLite in WAL mode with ``synchronous=NORMAL``: a record survives the gateway's process dying (what matters here),
and costs well under a millisecond. Records older than ``KEEP`` (longer than a command stays valid,
``FREQFLEET_COMMAND_MAX_AGE``) are deleted now and then.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.bus.messages import Envelope

APPLIED_FILE = "applied.sqlite"
KEEP_SECONDS = 7 * 24 * 3600
PRUNE_EVERY = 1000  # records written between two prunings


def open_record(path: Path, *schema: str) -> sqlite3.Connection:
    """One of the gateway's records on its disk (this one, ``bus/receipts.py``): SQLite in autocommit, WAL,
    ``synchronous=NORMAL``, usable from any thread (each record serialises its own calls), 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        db.execute(statement)
    path.chmod(0o600)
    return db


class AppliedCommands:
    """A :class:`shared.bus.dedupe.Deduplicator` on the gateway's disk, which also keeps each command's answer."""

    def __init__(self, path: Path, keep_seconds: float = KEEP_SECONDS) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._db = open_record(
            path,
            "CREATE TABLE IF NOT EXISTS applied (command_id TEXT PRIMARY KEY, answer TEXT, applied_at REAL NOT NULL)",
        )
        self._written = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def processed_among(self, messages: Sequence[Envelope]) -> set[uuid.UUID]:
        ids = [str(m.event_id) for m in messages]
        with self._lock:
            rows = self._db.execute(
                f"SELECT command_id FROM applied WHERE command_id IN ({','.join('?' * len(ids))})",  # noqa: S608
                ids,
            ).fetchall()
        return {uuid.UUID(row[0]) for row in rows}

    async def mark_processed(self, message: Envelope, pipe: Any) -> None:
        """Applied (the consumer says so once the handler returned): kept with its answer, if one was remembered."""
        self._write("INSERT OR IGNORE INTO applied (command_id, answer, applied_at) VALUES (?, NULL, ?)", message)

    async def remember(self, event_id: uuid.UUID, answer: str) -> None:
        self._write(
            "INSERT INTO applied (command_id, answer, applied_at) VALUES (?, ?, ?) "
            "ON CONFLICT(command_id) DO UPDATE SET answer = excluded.answer",
            None,
            (str(event_id), answer, time.time()),
        )

    async def recall(self, event_id: uuid.UUID) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM applied WHERE command_id = ?", (str(event_id),)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM applied").fetchone()[0])

    def _write(self, sql: str, message: Envelope | None, values: tuple[Any, ...] | None = None) -> None:
        params = values if values is not None else (str(message.event_id) if message else "", time.time())
        with self._lock:
            self._db.execute(sql, params)
            self._written += 1
            if self._written % PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM applied WHERE applied_at < ?", (time.time() - self.keep_seconds,))
