"""A consumer-group reader with at-least-once delivery and effects applied once.

What it guarantees, and how:

- **Nothing is lost.** An entry is acked only after its handler returned. Entries read
  but not finished (a crash, a shutdown) stay in the group's pending list: this
  consumer reads its own pending entries first when it starts, and any consumer of the
  group takes over entries idle longer than ``claim_idle_ms`` with XAUTOCLAIM.
- **Nothing is applied twice.** Each envelope has an ``event_id``; with a deduplicator,
  an entry whose ``event_id`` was already applied is acked without calling the handler.
- **Nothing wedges the stream.** An entry that can't be decoded (not JSON, unknown type,
  unsupported schema version, invalid payload) goes to the dead-letter stream at once; one
  whose handler fails is retried after ``claim_idle_ms`` and dead-lettered after
  ``max_deliveries`` attempts, with the last error as the reason. The dead-letter entry is
  written before the ack.
- **A slow handler is not stolen.** While a handler runs, the consumer refreshes its
  claim (XCLAIM ... JUSTID, which resets the idle time without counting a delivery).
- **Redis going away is survived.** Connection errors back off (with jitter) and retry;
  a group that vanished (Redis restarted without persistence) is created again.
- **Shutdown drains.** ``stop()`` lets the handler in progress finish; entries read and
  not yet handled stay pending for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from asgi_correlation_id import correlation_id
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus.backlog import trim_consumed
from shared.bus.dedupe import Deduplicator
from shared.bus.messages import Envelope, UndecodableMessage, decode
from shared.bus.publisher import ENVELOPE_FIELD
from shared.bus.streams import DEAD_LETTER_MAXLEN, dead_letter_stream
from shared.logging import get_logger
from shared.redis import create_redis

log = get_logger(__name__)

TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


@dataclass(frozen=True)
class Delivery:
    """One message handed to a handler."""

    stream: str
    entry_id: str
    message: Envelope
    deliveries: int


Handler = Callable[[Delivery], Awaitable[None]]
# Told, after each batch, which messages it applied or recognised as applied before, and the batch's last entry id
# (the management server sends the gateways their receipts: shared/bus/receipts.py).
AfterBatch = Callable[[list[Envelope], str], Awaitable[None]]
# Checks a batch of entries (entry id, fields) before they are decoded (a gateway verifies the commands'
# signatures): per entry, a reason to dead-letter it or None to go on. An exception leaves the whole batch
# pending, to be tried again (the keys may be unreachable).
AdmitCheck = Callable[[list[tuple[str, dict[bytes, bytes]]]], Awaitable[list[str | None]]]


@dataclass
class ConsumerConfig:
    stream: str
    group: str
    consumer: str
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    reclaim_interval_s: float | None = None  # default: half of claim_idle_ms
    block_ms: int = 2_000
    batch: int = 32
    group_start_id: str = "0"  # a new group reads what was published before it existed
    dead_letter_maxlen: int = DEAD_LETTER_MAXLEN
    backoff_min_s: float = 0.1
    backoff_max_s: float = 5.0
    # Trim what every group has consumed once it is this old (the stream's sole reader does it: the management
    # server on freqfleet:events); None: entries stay until the stream's own limit.
    trim_consumed_after_s: float | None = None
    # XACK a batch's entries together after the batch (one round trip) instead of each after its handler. Only with
    # a deduplicator that records an entry as applied before its ack, outside Redis (the gateway's, on its disk): a
    # crash in the batch then redelivers entries it applied, and they are recognised.
    ack_per_batch: bool = False

    @property
    def dead_letter_stream(self) -> str:
        return dead_letter_stream(self.stream)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    handler_errors: int = 0
    dead_lettered: int = 0
    trimmed_while_pending: int = 0
    trimmed: int = 0  # consumed entries trimmed (trim_consumed_after_s)
    reclaimed: int = 0
    reconnects: int = 0
    last_error: str | None = None
    by_type: dict[str, int] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamConsumer:
    def __init__(
        self,
        redis_url: str,
        config: ConsumerConfig,
        handler: Handler,
        deduplicator: Deduplicator | None = None,
        admit: AdmitCheck | None = None,
        on_duplicate: Callable[[Envelope], Awaitable[None]] | None = None,
        after_batch: AfterBatch | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.deduplicator = deduplicator
        self.admit = admit
        self.on_duplicate = on_duplicate  # a redelivery of an applied message (the gateway answers it again)
        self.after_batch = after_batch
        self.stats = ConsumerStats()
        # Blocking reads need a socket timeout above the block time.
        self.redis = create_redis(redis_url, socket_timeout=config.block_ms / 1000 + 10)
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._errors_key = f"freqfleet:bus-errors:{config.stream}:{config.group}"
        self._current: str | None = None  # the entry whose handler is running
        self._batch_acks: Pipeline | None = None  # collects the batch's acks (ack_per_batch)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"consumer:{self.config.stream}:{self.config.consumer}")
        return self._task

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the message in hand, leave the rest pending, close the connection."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning("consumer did not drain in time; cancelling", stream=self.config.stream)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.redis.aclose()

    async def run(self) -> None:
        cfg = self.config
        backoff = cfg.backoff_min_s
        while not self._stopping.is_set():
            reclaimer: asyncio.Task[None] | None = None
            try:
                await self._ensure_group()
                await self._drain_own_pending()
                reclaimer = asyncio.create_task(self._background())
                backoff = cfg.backoff_min_s
                while not self._stopping.is_set():
                    entries = await self._read_new()
                    if entries:
                        await self._process_batch(entries, deliveries=None)
            except TRANSIENT_ERRORS as exc:
                self.stats.reconnects += 1
                delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not crypto
                log.warning(
                    "redis unavailable; retrying", stream=cfg.stream, error=str(exc), retry_in_s=round(delay, 2)
                )
                backoff = min(cfg.backoff_max_s, backoff * 2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group vanished; creating it again", stream=cfg.stream, group=cfg.group)
            finally:
                if reclaimer is not None:
                    reclaimer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_ERRORS):
                        await reclaimer

    # -- reading -----------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        cfg = self.config
        try:
            await self.redis.xgroup_create(cfg.stream, cfg.group, id=cfg.group_start_id, mkstream=True)
            log.info("consumer group created", stream=cfg.stream, group=cfg.group)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_new(self) -> list[tuple[Any, dict[bytes, bytes]]]:
        cfg = self.config
        read = asyncio.ensure_future(
            self.redis.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: ">"}, count=cfg.batch, block=cfg.block_ms)
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if read not in done:
            # Shutting down: whatever the server handed out meanwhile stays pending.
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_ERRORS):
                await read
            return []
        response: Any = read.result()  # RESP2: [[stream, [(id, fields), ...]]]
        if not response:
            return []
        _, entries = response[0]
        return list(entries)

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.config.stream, self.config.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10
        )
        return {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _drain_own_pending(self) -> None:
        """Entries this consumer read before and never acked come before anything new."""
        cfg = self.config
        cursor = "0"
        while not self._stopping.is_set():
            response: Any = await self.redis.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: cursor}, count=cfg.batch)
            entries = list(response[0][1]) if response else []
            if not entries:
                return
            ids = [_text(e[0]) for e in entries]
            log.info("resuming own pending entries", stream=cfg.stream, count=len(entries))
            await self._process_batch(entries, deliveries=await self._delivery_counts(ids))
            cursor = ids[-1]

    async def _background(self) -> None:
        keeper = asyncio.create_task(self._keep_claim())
        try:
            await self._reclaim_loop()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _reclaim_loop(self) -> None:
        cfg = self.config
        interval = cfg.reclaim_interval_s or cfg.claim_idle_ms / 2000
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            try:
                await self.reclaim_once()
                if cfg.trim_consumed_after_s is not None:
                    self.stats.trimmed += await trim_consumed(
                        self.redis, cfg.stream, keep=cfg.trim_consumed_after_s, now=time.time()
                    )
            except TRANSIENT_ERRORS as exc:
                log.debug("reclaim skipped: redis unavailable", error=str(exc))

    async def reclaim_once(self) -> int:
        """Take over entries idle past the threshold (from dead or stuck consumers); returns how many."""
        cfg = self.config
        cursor = "0-0"
        claimed = 0
        while not self._stopping.is_set():
            next_cursor, entries, deleted = await self.redis.xautoclaim(
                cfg.stream, cfg.group, cfg.consumer, min_idle_time=cfg.claim_idle_ms, start_id=cursor, count=cfg.batch
            )
            for gone in deleted or []:
                # Trimmed by MAXLEN while pending: its content is lost, so there is nothing to apply.
                self.stats.trimmed_while_pending += 1
                log.error("pending entry was trimmed before it was handled", stream=cfg.stream, entry_id=_text(gone))
                await self.redis.xack(cfg.stream, cfg.group, gone)
            if entries:
                ids = [_text(e[0]) for e in entries]
                counts = await self._delivery_counts(ids)
                claimed += len(entries)
                self.stats.reclaimed += len(entries)
                log.info("reclaimed idle entries", stream=cfg.stream, entry_ids=ids, deliveries=counts)
                await self._process_batch(entries, deliveries=counts)
            cursor = _text(next_cursor)
            if cursor == "0-0":
                break
        return claimed

    # -- handling ----------------------------------------------------------------------

    async def _process_batch(self, entries: list[Any], deliveries: dict[str, int] | None) -> None:
        """Handle entries in order: decode, dead-letter what can't be handled, skip duplicates."""
        async with self._lock:
            admitted: list[tuple[str, Envelope, int]] = []
            verdicts = await self._check_batch(entries)
            if verdicts is None:
                return  # can't be checked now: the batch stays pending
            for (entry_id, fields), verdict in zip(entries, verdicts, strict=True):
                eid = _text(entry_id)
                count = deliveries.get(eid, 1) if deliveries is not None else 1
                message = await self._admit(eid, fields, count, verdict)
                if message is not None:
                    admitted.append((eid, message, count))
            if not admitted:
                return
            done: set[uuid.UUID] = set()
            if self.deduplicator is not None:
                done = await self.deduplicator.processed_among([m for _, m, _ in admitted])
            settled: list[Envelope] = []
            if self.config.ack_per_batch:
                self._batch_acks = self.redis.pipeline(transaction=False)
            try:
                await self._apply_all(admitted, done, settled)
            finally:
                acks, self._batch_acks = self._batch_acks, None
                if acks is not None and len(acks):
                    await acks.execute()
                if self.after_batch is not None:  # also after a batch that applied nothing (answers to send)
                    try:
                        await self.after_batch(settled, _text(entries[-1][0]))
                    except Exception as exc:  # what it reports is sent again after the next batch, or retried
                        log.warning("after-batch step failed", error=f"{type(exc).__name__}: {exc}")

    async def _apply_all(
        self, admitted: list[tuple[str, Envelope, int]], done: set[uuid.UUID], settled: list[Envelope]
    ) -> None:
        """Handle the admitted messages in order; ``settled`` gets each one applied now or before."""
        for eid, message, count in admitted:
            if self._stopping.is_set():
                return  # shutting down: the rest stays pending, read first at the next start
            if message.event_id in done:
                self.stats.duplicates += 1
                log.info("duplicate delivery acked", event_id=str(message.event_id), entry_id=eid)
                if self.on_duplicate is not None:
                    try:
                        await self.on_duplicate(message)
                    except Exception as exc:  # the duplicate is acked all the same: it was applied
                        log.warning("duplicate not answered again", error=f"{type(exc).__name__}: {exc}")
                await self._ack(eid)
                settled.append(message)
                continue
            if await self._handle(eid, message, count):
                done.add(message.event_id)  # the same event twice in one batch is applied once
                settled.append(message)

    async def _check_batch(self, entries: list[Any]) -> list[str | None] | None:
        """The admission check's verdict per entry (None: admitted); None when the check itself failed."""
        if self.admit is None:
            return [None] * len(entries)
        present = [(_text(eid), fields) for eid, fields in entries if fields]
        try:
            found = dict(zip((eid for eid, _ in present), await self.admit(present), strict=True))
        except Exception as exc:
            error = f"the entries could not be checked: {type(exc).__name__}: {exc}"[:1000]
            log.warning("entries can't be checked yet; they stay pending", count=len(entries), error=error)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.redis.hset(self._errors_key, mapping={eid: error for eid, _ in present})
            return None
        return [found.get(_text(eid)) for eid, _ in entries]

    async def _admit(
        self, entry_id: str, fields: dict[bytes, bytes] | None, deliveries: int, refused: str | None = None
    ) -> Envelope | None:
        """The entry's message, or None when it was trimmed or has been dead-lettered."""
        cfg = self.config
        if not fields:
            self.stats.trimmed_while_pending += 1
            log.error("pending entry was trimmed before it was handled", stream=cfg.stream, entry_id=entry_id)
            await self.redis.xack(cfg.stream, cfg.group, entry_id)
            return None
        if deliveries > cfg.max_deliveries:
            last = await self.redis.hget(self._errors_key, entry_id)
            reason = f"handler failed {deliveries - 1} times; last error: {_text(last) if last else 'unknown'}"
            await self._dead_letter(entry_id, fields, reason, deliveries)
            return None
        if refused is not None:
            log.warning("entry refused", stream=cfg.stream, entry_id=entry_id, reason=refused)
            await self._dead_letter(entry_id, fields, refused, deliveries)
            return None
        raw = fields.get(ENVELOPE_FIELD.encode())
        try:
            if raw is None:
                raise UndecodableMessage(f"entry has no {ENVELOPE_FIELD!r} field")
            message = decode(raw)
        except UndecodableMessage as exc:
            await self._dead_letter(entry_id, fields, str(exc), deliveries)
            return None
        return message

    async def _handle(self, entry_id: str, message: Envelope, deliveries: int) -> bool:
        """Run the handler; ack (with the dedupe mark) when it returns. False when it failed."""
        cfg = self.config
        token = correlation_id.set(message.correlation_id)
        self._current = entry_id
        try:
            with structlog.contextvars.bound_contextvars(
                correlation_id=message.correlation_id, event_id=str(message.event_id), message_type=message.type
            ):
                try:
                    await self.handler(Delivery(cfg.stream, entry_id, message, deliveries))
                except Exception as exc:
                    self.stats.handler_errors += 1
                    error = f"{type(exc).__name__}: {exc}"[:1000]
                    self.stats.last_error = error
                    log.warning("handler failed; the entry stays pending", entry_id=entry_id, error=error)
                    with contextlib.suppress(*TRANSIENT_ERRORS):
                        await self.redis.hset(self._errors_key, entry_id, error)
                    return False
                await self._ack(entry_id, message, deliveries)
                self.stats.handled += 1
                self.stats.by_type[message.type] = self.stats.by_type.get(message.type, 0) + 1
                return True
        finally:
            self._current = None
            correlation_id.reset(token)

    async def _keep_claim(self) -> None:
        """Reset the idle time of the entry in hand, so no other consumer claims it while it is handled."""
        cfg = self.config
        interval = max(cfg.claim_idle_ms / 3000, 0.01)
        while True:
            await asyncio.sleep(interval)
            if (entry_id := self._current) is not None:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self.redis.xclaim(cfg.stream, cfg.group, cfg.consumer, 0, [entry_id], justid=True)

    async def _ack(self, entry_id: str, handled: Envelope | None = None, deliveries: int = 2) -> None:
        """XACK (and forget the entry's last error); with ``handled``, record it as applied first.

        One round trip: the mark precedes the XACK in the pipeline, so a crash can leave an
        applied entry unacked (redelivered, then skipped as a duplicate) but never acked and
        unmarked. Only a redelivered entry can have an error recorded.
        """
        cfg = self.config
        batched = self._batch_acks
        pipe = batched if batched is not None else self.redis.pipeline(transaction=False)
        if handled is not None and self.deduplicator is not None:
            await self.deduplicator.mark_processed(handled, pipe)
        pipe.xack(cfg.stream, cfg.group, entry_id)
        if deliveries > 1:
            pipe.hdel(self._errors_key, entry_id)
        if batched is None:  # else with the batch's others, after it (ack_per_batch)
            await pipe.execute()

    async def _dead_letter(self, entry_id: str, fields: dict[bytes, bytes], reason: str, deliveries: int) -> None:
        cfg = self.config
        letter: dict[Any, Any] = {k: v for k, v in fields.items() if k != b"reason"}
        letter.update(
            {
                "reason": reason,
                "source_stream": cfg.stream,
                "group": cfg.group,
                "entry_id": entry_id,
                "deliveries": str(deliveries),
                "dead_at": datetime.now(UTC).isoformat(),
            }
        )
        # Written before the ack: a crash in between leaves the entry pending, never lost.
        await self.redis.xadd(cfg.dead_letter_stream, letter, maxlen=cfg.dead_letter_maxlen, approximate=True)
        await self._ack(entry_id)
        self.stats.dead_lettered += 1
        log.error("message dead-lettered", stream=cfg.stream, entry_id=entry_id, reason=reason, deliveries=deliveries)


def new_consumer_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
