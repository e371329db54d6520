"""Publishing the gateway's events, with a local outbox for when Redis does not answer.

Every event the gateway reports goes through :class:`EventPublisher`. It XADDs to
``freqfleet:events``; when Redis does not answer, the entry is appended to a JSONL file in the
gateway's data folder (``outbox.jsonl``: one stream entry per line, exactly the fields that would
have been XADDed) and a background task flushes the file, in order, as soon as Redis answers again.

Decisions:

- **Order is kept.** While the outbox holds anything, new events are appended behind it instead of
  overtaking it, and one lock serialises publishing and flushing.
- **Facts are kept, snapshots are not.** ``BOT_STATUS`` and ``GATEWAY_HEARTBEAT`` are superseded by
  the next one a few seconds later; queueing them during a long outage would only grow the file and
  replay stale pictures, so they are dropped while Redis is away. Everything else (command answers,
  starts, stops, failures, trades, emergency stops) is queued.
- **At least once.** A flush that dies between XADD and rewriting the file sends those entries again
  with the same ``event_id``, which the management server's dedupe recognises. Lines are appended with
  ``fsync``; a torn last line (a crash mid-write) is logged and skipped.
- **A Redis that hangs is away.** An XADD that gets no answer within ``send_timeout`` counts as Redis away
  for ``away_for`` seconds: meanwhile events go to the outbox (snapshots are dropped) without trying, so no
  event waits out the timeout behind another (a frozen Redis cost the kill switch's report 17 s, #17).
- Events are encoded once, when published (the correlation id of the request or command that caused
  them is captured then), so a flushed event is byte for byte what would have been sent.
- **Answers go out by the batch.** A command's answer needn't be on the stream before the next command is handled,
  so the command handler queues it (:meth:`EventPublisher.publish_later`) and the consumer sends a batch's answers
  after the batch, signed under one signature, in one round trip (:meth:`EventPublisher.flush_later`). Order holds:
  any other event published meanwhile sends the queued ones first.
- **On the stream is not yet received.** Redis replicates asynchronously: an event on the stream can be lost with
  it (a failover, a ``FLUSHALL``). With ``receipts``, each event that needs one is kept on disk until the
  management server confirms it (``bus/receipts.py``), and published again once the management server has read
  past it without confirming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from shared.bus.messages import Envelope
from shared.bus.publisher import ENVELOPE_FIELD, Publisher, entry_fields, with_request_correlation
from shared.bus.receipts import entry_key, needs_receipt, receipt_ids, receipt_through
from shared.bus.streams import EVENTS_STREAM
from shared.files import atomic_write
from shared.logging import get_logger
from trading_gateway.bus.receipts import MAX_RESENDS, AwaitingReceipts

log = get_logger(__name__)

OUTBOX_FILE = "outbox.jsonl"
DROPPABLE = frozenset({"BOT_STATUS", "GATEWAY_HEARTBEAT"})
UNAVAILABLE = (RedisError, OSError)
_FIELDS = ("type", "event_id", ENVELOPE_FIELD)


class EventPublisher:
    """Publishes events on ``freqfleet:events``; queues them locally while Redis is away."""

    def __init__(
        self,
        publisher: Publisher,
        outbox: Path,
        *,
        flush_interval: float = 1.0,
        send_timeout: float = 3.0,
        away_for: float = 5.0,
        receipts: AwaitingReceipts | None = None,
    ) -> None:
        self.publisher = publisher
        self.outbox = Path(outbox)
        self.receipts = receipts
        self.confirmed = 0
        self.published_again = 0
        self.flush_interval = flush_interval
        self.send_timeout = send_timeout
        self.away_for = away_for
        self.published = 0
        self.queued = 0
        self.dropped = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending = len(self._read_lines())
        self._away_until = 0.0  # Redis did not answer: no direct XADD before this (monotonic) time
        self._later: list[dict[str, str]] = []  # queued by publish_later, in order
        self._receipts_read_at = 0.0

    @property
    def pending(self) -> int:
        """Events in the outbox, waiting for Redis."""
        return self._pending

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self._flush_loop(), name="gateway-outbox")
            if self._pending:
                self._wake.set()

    async def stop(self) -> None:
        """Stop the flusher after one last attempt; what is still queued stays in the file."""
        await self.flush_later()
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            with contextlib.suppress(*UNAVAILABLE):
                await self.flush()
        if self._pending:
            log.warning("events left in the outbox for the next start", count=self._pending, path=str(self.outbox))

    # ------------------------------------------------------------------ publishing

    async def publish(self, message: Envelope) -> bool:
        """Publish ``message``; True when it is on the stream, False when it was queued (or dropped)."""
        fields = entry_fields(with_request_correlation(message))
        if self._later:
            await self.flush_later()  # what was queued before goes first
        async with self._lock:
            if self._pending == 0 and time.monotonic() >= self._away_until:
                try:
                    self._kept(fields, await self._send(fields))
                except UNAVAILABLE as exc:
                    # Away for a while: the next events go straight to the outbox (or are dropped) instead of
                    # each waiting out the timeout in turn, with this lock held.
                    self._away_until = time.monotonic() + self.away_for
                    log.warning(
                        "event not published: redis unavailable",
                        message_type=message.type,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                else:
                    self.published += 1
                    return True
            self._queue(fields)
            return False

    def publish_later(self, message: Envelope) -> None:
        """Queue ``message`` (encoded now, with the current correlation id) for the next :meth:`flush_later`, or the
        next :meth:`publish`, whichever comes first."""
        self._later.append(entry_fields(with_request_correlation(message)))

    async def flush_later(self) -> int:
        """Send what :meth:`publish_later` queued, in order and in one round trip; how many went on the stream (the
        rest went to the outbox, or was dropped, as :meth:`publish` does when Redis is away)."""
        if not self._later:
            return 0
        batch, self._later = self._later, []
        async with self._lock:
            if self._pending == 0 and time.monotonic() >= self._away_until:
                try:
                    entry_ids = await asyncio.wait_for(
                        self.publisher.publish_raw_many(EVENTS_STREAM, batch), self.send_timeout
                    )
                except (*UNAVAILABLE, TimeoutError) as exc:
                    self._away_until = time.monotonic() + self.away_for
                    log.warning(
                        "events not published: redis unavailable",
                        count=len(batch),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                else:
                    for fields, entry_id in zip(batch, entry_ids, strict=True):
                        self._kept(fields, entry_id)
                    self.published += len(batch)
                    return len(batch)
            for fields in batch:  # behind what the outbox holds (an XADD that landed after all is a duplicate)
                self._queue(fields)
            return 0

    def _queue(self, fields: dict[str, str]) -> None:
        """Redis is away: into the outbox, behind what it holds (a snapshot is dropped instead). Under the lock."""
        if fields["type"] in DROPPABLE:
            self.dropped += 1
            return
        self._append(fields)
        self._pending += 1
        self.queued += 1
        self._wake.set()
        log.info("event queued in the outbox", message_type=fields["type"], event_id=fields["event_id"])

    async def flush(self) -> int:
        """Send the outbox in order until it is empty or Redis fails; returns how many were sent."""
        async with self._lock:
            lines = self._read_lines()
            sent = 0
            done = 0
            for line in lines:
                try:
                    fields = json.loads(line)
                    if not isinstance(fields, dict) or any(not isinstance(fields.get(k), str) for k in _FIELDS):
                        raise ValueError("not an outbox entry")
                except ValueError:
                    log.error("unreadable outbox line skipped", path=str(self.outbox), line=line[:200])
                    done += 1
                    continue
                event = {k: fields[k] for k in _FIELDS}
                try:
                    self._kept(event, await self._send(event))
                except UNAVAILABLE:
                    self._away_until = time.monotonic() + self.away_for
                    break
                self._away_until = 0.0  # Redis answers again
                done += 1
                sent += 1
            if done:
                self._rewrite(lines[done:])
            self._pending = len(lines) - done
            self.published += sent
            if sent:
                log.info("outbox flushed", sent=sent, left=self._pending)
            return sent

    async def _send(self, fields: dict[str, str]) -> str:
        """XADD, bounded in time: a Redis that hangs counts as away (an XADD that lands late is a duplicate
        the consumers skip). The entry's id."""
        try:
            return await asyncio.wait_for(self.publisher.publish_raw(EVENTS_STREAM, fields), self.send_timeout)
        except TimeoutError:
            raise OSError(f"no answer from redis within {self.send_timeout:g} s") from None

    def _kept(self, fields: dict[str, str], entry_id: str) -> None:
        """On the stream: kept until the management server confirms it, if it needs a receipt."""
        if self.receipts is not None and needs_receipt(fields["type"]):
            self.receipts.sent(fields, entry_id)

    # ------------------------------------------------------------------ receipts

    async def check_receipts(self, now: float | None = None) -> tuple[int, int]:
        """Forget the events the management server confirmed; publish again the unconfirmed ones it has read past
        (Redis lost them). How many were confirmed, and published again (``now``: the time to judge waits by)."""
        receipts = self.receipts
        if receipts is None or receipts.count() == 0:
            return 0, 0
        redis = self.publisher.redis
        confirmed = 0
        while True:
            found: Any = await asyncio.wait_for(
                redis.xread({receipts.stream: receipts.cursor}, count=1000), self.send_timeout
            )
            entries: list[tuple[bytes, dict[bytes, bytes]]] = found[0][1] if found else []
            for entry_id, fields in entries:
                confirmed += receipts.confirmed(receipt_ids(fields))
                receipts.through = max(receipts.through, receipt_through(fields))
                receipts.cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if len(entries) < 1000:
                break
        again = 0
        now = time.time() if now is None else now
        for event in receipts.due(now):
            if entry_key(event.entry_id) > receipts.through:  # not read yet: the management server is away or behind
                receipts.checked(event, event.entry_id, now)
            elif now - event.first_sent > receipts.keep_for or event.resent >= MAX_RESENDS:
                receipts.give_up(event.event_id)
                log.error(
                    "event given up: never confirmed (the management server's dead letters may say why)",
                    event_id=event.event_id,
                    message_type=event.fields.get("type"),
                    copies=event.resent,
                    hours=round((now - event.first_sent) / 3600, 1),
                )
            else:  # read past, never confirmed: Redis lost it
                receipts.checked(event, await self._send(event.fields), now)
                again += 1
        self.confirmed += confirmed
        self.published_again += again
        if again:
            log.warning("events lost by redis published again", count=again, left=receipts.count())
        return confirmed, again

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._pending and not self._stopping.is_set():
                try:
                    await self.flush()
                except Exception:  # a bug here must not end the flusher
                    log.exception("outbox flush failed")
            if self.receipts is not None and time.monotonic() - self._receipts_read_at >= self.flush_interval:
                self._receipts_read_at = time.monotonic()
                try:
                    await self.check_receipts()
                except (*UNAVAILABLE, TimeoutError) as exc:
                    log.info("receipts not read: redis unavailable", error=f"{type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("receipts check failed")

    # ------------------------------------------------------------------ the file

    def _read_lines(self) -> list[str]:
        try:
            text = self.outbox.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def _append(self, fields: dict[str, str]) -> None:
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.outbox, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(fields, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, lines: list[str]) -> None:
        if lines:
            atomic_write(self.outbox, "".join(line + "\n" for line in lines).encode())
        else:
            with contextlib.suppress(FileNotFoundError):
                self.outbox.unlink()
