"""The events this gateway reported that the management server has not confirmed yet: ``<gateway dir>/
receipts.sqlite``.

The event publisher (``bus/events.py``) records each event that needs a receipt (``shared/bus/receipts.py``) once
it is on the events stream, with the entry id Redis gave it; the management server's receipts remove it. An event
unconfirmed after ``within`` seconds is compared with how far the management server has read the stream (the
receipts say): not reached yet, it waits for the management server (away, or behind), and is compared again later;
read past (Redis lost it: a failover, a ``FLUSHALL``), it is published again with the same ``event_id``. Waits
double up to ``max_wait``; after ``keep_for`` an event is given up, with a log line (the management server was away
for longer than the events stream keeps anything); so is one published ``MAX_RESENDS`` times and read past each time
without a receipt: the management server does not take it (it dead-letters it, with the reason, on
``freqfleet:events:dead``), and more copies would only add dead letters.

SQLite in WAL mode with ``synchronous=NORMAL``, like ``applied.sqlite``: a record survives the gateway's process
dying, and costs tens of microseconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trading_gateway.bus.applied import open_record

RECEIPTS_FILE = "receipts.sqlite"
DEFAULT_WITHIN = 15.0
DEFAULT_MAX_WAIT = 300.0
DEFAULT_KEEP_FOR = 6 * 3600.0  # as long as the events stream keeps an unconsumed entry (FREQFLEET_EVENTS_MAX_AGE)
MAX_RESENDS = 5  # copies of one event read past without a receipt: the management server refuses it


@dataclass(frozen=True)
class Unconfirmed:
    """An event on its way: its stream fields (unsigned; signed anew when sent again) and where it was put."""

    event_id: str
    entry_id: str
    fields: dict[str, str]
    first_sent: float
    tries: int
    resent: int = 0


class AwaitingReceipts:
    """The events waiting for the management server's receipt, in the order they were sent."""

    def __init__(
        self,
        path: Path,
        stream: str,
        *,
        within: float = DEFAULT_WITHIN,
        max_wait: float = DEFAULT_MAX_WAIT,
        keep_for: float = DEFAULT_KEEP_FOR,
    ) -> None:
        self.path = path
        self.stream = stream  # the gateway's receipts stream
        self.within = within
        self.max_wait = max_wait
        self.keep_for = keep_for
        self.cursor = "0-0"  # the last receipt entry read (all of the stream again after a restart: cheap)
        self.through = (0, 0)  # how far the management server has read the events stream, as its receipts say
        self._lock = threading.Lock()
        self._db = open_record(
            path,
            "CREATE TABLE IF NOT EXISTS awaiting (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL,"
            " entry_id TEXT NOT NULL, fields TEXT NOT NULL, first_sent REAL NOT NULL, check_at REAL NOT NULL,"
            " tries INTEGER NOT NULL DEFAULT 0, resent INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS awaiting_check_at ON awaiting (check_at)",
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sent(self, fields: dict[str, str], entry_id: str, now: float | None = None) -> None:
        """``fields`` (an event) is on the stream as ``entry_id``: kept until confirmed. Sent again (a flush of the
        outbox after a direct send that timed out): the newest entry id counts, the first time stays."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "INSERT INTO awaiting (event_id, entry_id, fields, first_sent, check_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(event_id) DO UPDATE SET entry_id = excluded.entry_id",
                (fields["event_id"], entry_id, json.dumps(fields, separators=(",", ":")), now, now + self.within),
            )

    def confirmed(self, event_ids: Iterable[str]) -> int:
        """Forget the confirmed events; how many of them were waiting."""
        ids = list(event_ids)
        removed = 0
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cursor = self._db.execute(
                    f"DELETE FROM awaiting WHERE event_id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    chunk,
                )
                removed += cursor.rowcount
        return removed

    def due(self, now: float | None = None, limit: int = 500) -> list[Unconfirmed]:
        """The events to look for on the stream now, oldest first."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, entry_id, fields, first_sent, tries, resent FROM awaiting WHERE check_at <= ? "
                "ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Unconfirmed(r[0], r[1], json.loads(r[2]), float(r[3]), int(r[4]), int(r[5])) for r in rows]

    def checked(self, event: Unconfirmed, entry_id: str, now: float | None = None) -> None:
        """Looked for (and published again as ``entry_id`` if it was gone): next look after a longer wait."""
        now = time.time() if now is None else now
        wait = min(self.within * 2 ** (event.tries + 1), self.max_wait)
        resent = int(entry_id != event.entry_id)
        with self._lock:
            self._db.execute(
                "UPDATE awaiting SET entry_id = ?, check_at = ?, tries = tries + 1, resent = resent + ? "
                "WHERE event_id = ?",
                (entry_id, now + wait, resent, event.event_id),
            )

    def give_up(self, event_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM awaiting WHERE event_id = ?", (event_id,))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM awaiting").fetchone()[0])
