"""The outbox relay: publishes committed outbox rows to Redis and marks them sent.

It wakes on the NOTIFY the outbox's trigger sends at commit (so a command reaches the bus
within milliseconds) and also polls, so a missed notification or a relay that was down
only delays messages. Each pass holds a transaction-level advisory lock: several management
processes (workers, replicas) run a relay each, one publishes at a time, in the order of the
rows' ids (two relays taking batches side by side could put a bot's later command on its
gateway's stream before an earlier one). If the
relay dies after XADD but before its commit, the row is published again with the same
``event_id``, and consumers recognise the duplicate.

A command is done when its gateway answers it, not when it is in Redis (which may lose it: a failover before it was
replicated, a ``FLUSHALL``, a restored backup): until the events consumer records the answer (``acknowledged_at``,
``bus.service.acknowledge``) the relay publishes it again at ``republish_at``, the same envelope and id, signed anew,
waiting twice as long each time up to ``REPUBLISH_CAP``, and gives it up once it is older than a gateway would take.
The gateway applies it once (its record on disk, ``trading_gateway/bus/applied.py``) and answers each copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import cast

import redis.asyncio as aioredis
from sqlalchemy import Interval, Table, bindparam, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from management_server.bus.models import OutboxMessage
from management_server.bus.service import OUTBOX_CHANNEL
from management_server.db import listen
from management_server.elected import OUTBOX_RELAY_LOCK
from shared.bus.leases import set_holder
from shared.bus.publisher import Publisher, raw_entry_fields
from shared.bus.signing import CommandSigner
from shared.bus.streams import COMMANDS_PREFIX, Retention, is_commands_stream
from shared.logging import get_logger

log = get_logger(__name__)

REPUBLISH_CAP = timedelta(minutes=5)  # the longest wait between two publications of an unanswered command

_OUTBOX = cast(Table, OutboxMessage.__table__)
_LOCK = select(func.pg_try_advisory_xact_lock(OUTBOX_RELAY_LOCK))
_IS_COMMAND = _OUTBOX.c.stream.startswith(COMMANDS_PREFIX, autoescape=True)
_PUBLISHED = (  # a command waits for its gateway's answer; anything else is done
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        published_at=func.now(),
        attempts=_OUTBOX.c.attempts + 1,
        republish_at=case((_IS_COMMAND, func.now() + bindparam("answer_within", type_=Interval())), else_=None),
        acknowledged_at=case((_IS_COMMAND, None), else_=func.now()),
    )
)
_DUE = (  # commands published and not answered in time, oldest first
    select(_OUTBOX.c.id, _OUTBOX.c.event_id, _OUTBOX.c.stream, _OUTBOX.c.message_type, _OUTBOX.c.envelope)
    .add_columns(_OUTBOX.c.created_at, _OUTBOX.c.attempts)
    .where(_OUTBOX.c.republish_at <= func.now(), _OUTBOX.c.acknowledged_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_REPUBLISHED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(attempts=_OUTBOX.c.attempts + 1, republish_at=func.now() + bindparam("after", type_=Interval()))
)
_GIVEN_UP = (
    update(_OUTBOX).where(_OUTBOX.c.id == bindparam("row_id")).values(republish_at=None, last_error=bindparam("error"))
)
_FAILED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(attempts=_OUTBOX.c.attempts + 1, last_error=bindparam("error"))
)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: aioredis.Redis,
        *,
        batch: int = 200,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(days=7),
        signer: CommandSigner | None = None,
        stream_retention: Retention | None = None,
        answer_within: float = 15.0,
        give_up_after: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self.publisher = Publisher(redis, retention=stream_retention)  # old commands trimmed by age
        self.batch = batch
        self._batch = (  # the oldest unpublished rows, in order, skipping rows another pass holds
            select(_OUTBOX.c.id, _OUTBOX.c.event_id, _OUTBOX.c.stream, _OUTBOX.c.message_type, _OUTBOX.c.envelope)
            .where(_OUTBOX.c.published_at.is_(None))
            .order_by(_OUTBOX.c.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        self.poll_interval = poll_interval
        self.retention = retention
        self.signer = signer  # signs every entry of a gateway's command stream as it is published
        # A command its gateway has not answered within ``answer_within`` seconds is published again (the same id and
        # bytes: the gateway applies it once and answers again), then after twice as long, and so on up to
        # REPUBLISH_CAP apart, until ``give_up_after`` seconds after it was written (a gateway refuses a command
        # older than FREQFLEET_COMMAND_MAX_AGE anyway).
        self.answer_within = timedelta(seconds=answer_within)
        self.give_up_after = timedelta(seconds=give_up_after)
        self.published = 0
        self.republished = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_cleanup = datetime.min.replace(tzinfo=UTC)
        self._elsewhere = False  # the last pass found another process's relay holding the lock
        self.lock_attempts = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="outbox-listener")
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    while await self.publish_pending() == self.batch:
                        pass  # a full batch: there may be more
                    await self._cleanup()
                    backoff = 0.1
                except Exception as exc:
                    log.warning("outbox relay pass failed; retrying", error=f"{type(exc).__name__}: {exc}")
                    await self._sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
                if self._elsewhere:
                    # Another process's relay is publishing: it hears the same notifications, rows committed here
                    # included, so this one stops contending for the lock on every commit (a transaction each,
                    # for nothing) and only polls, ready to take over within a poll interval if that one ends.
                    await self._sleep(self.poll_interval)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _listen(self) -> None:
        """LISTEN on the outbox channel (``db.listen``: reconnects when it drops); cancelled by ``run``. Each
        (re)connection wakes the relay: it catches up on anything committed while not listening."""
        await listen(self.engine, OUTBOX_CHANNEL, lambda _: self._wake.set(), on_connect=self._wake.set, what="outbox")

    async def publish_pending(self) -> int:
        """Publish up to one batch of unpublished rows in order; returns how many were published.

        One relay at a time, of every management process: the pass holds a transaction-level advisory lock, so
        rows are published in the order of their ids, whichever process publishes them. A relay that finds the
        lock taken leaves the rows to the holder: every relay LISTENs, so a row committed after the holder read
        the outbox wakes the holder too (its wake flag is set during its pass), and it makes another pass."""
        published = await self._pass()
        return 0 if published is None else published

    async def _pass(self) -> int | None:
        """One pass in one transaction, with Core statements built once (no ORM objects on this path)."""
        published: list[int] = []
        async with self.engine.begin() as conn:
            self.lock_attempts += 1
            self._elsewhere = not await conn.scalar(_LOCK)
            if self._elsewhere:
                return None
            rows = (await conn.execute(self._batch)).all()
            for row_id, event_id, stream, message_type, envelope in rows:
                try:
                    fields = raw_entry_fields(message_type, str(event_id), envelope)
                    if self.signer is not None and is_commands_stream(stream):
                        fields |= self.signer.fields(stream, envelope)
                    if message_type == "START_BOT":  # the placement: this gateway holds the bot from now on
                        await self._name_holder(stream, envelope)
                    await self.publisher.publish_raw(stream, fields)
                except Exception as exc:
                    # Keep the order: stop here, the rest waits for the next pass.
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    await conn.execute(_FAILED, {"row_id": row_id, "error": error})
                    log.warning("outbox publish failed", event_id=str(event_id), error=error)
                    break
                published.append(row_id)
            if published:
                await conn.execute(_PUBLISHED, {"ids": published, "answer_within": self.answer_within})
            if len(rows) < self.batch:  # caught up: then the commands that wait for an answer too long
                self.republished += await self._republish(conn)
        self.published += len(published)
        return len(published)

    async def _republish(self, conn: AsyncConnection) -> int:
        """Publish again the commands whose gateway has not answered in time (a command Redis lost: a failover
        before it was replicated, a FLUSHALL, a restored backup; or an answer it lost). The holder is not named
        again: a later start may have named another."""
        count = 0
        now = datetime.now(UTC)
        for row_id, event_id, stream, message_type, envelope, created_at, attempts in await conn.execute(
            _DUE, {"batch": self.batch}
        ):
            if now - created_at > self.give_up_after:
                error = f"no answer from its gateway in {self.give_up_after.total_seconds():.0f} s: not published again"
                await conn.execute(_GIVEN_UP, {"row_id": row_id, "error": error})
                log.warning("command never answered; given up", event_id=str(event_id), stream=stream)
                continue
            fields = raw_entry_fields(message_type, str(event_id), envelope)
            if self.signer is not None:
                fields |= self.signer.fields(stream, envelope)
            try:
                await self.publisher.publish_raw(stream, fields)
            except Exception as exc:  # Redis away: the next pass tries again
                log.warning("command not published again", event_id=str(event_id), error=f"{type(exc).__name__}: {exc}")
                break
            after = min(REPUBLISH_CAP, self.answer_within * 2 ** max(0, attempts - 1))
            await conn.execute(_REPUBLISHED, {"row_id": row_id, "after": after})
            log.info("command published again: no answer yet", event_id=str(event_id), stream=stream, attempt=attempts)
            count += 1
        return count

    async def _name_holder(self, stream: str, envelope: str) -> None:
        """The bot's holder (``shared/bus/leases.py``) is the gateway its START_BOT goes to, from its generation on,
        written before the command is: the gateway that takes it finds itself named."""
        data = json.loads(envelope)["data"]
        await set_holder(self.publisher.redis, data["bot_id"], stream.removeprefix(COMMANDS_PREFIX), data["generation"])

    async def _cleanup(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_cleanup < timedelta(minutes=10):
            return
        self._last_cleanup = now
        async with self.sessionmaker.begin() as session:
            await session.execute(delete(OutboxMessage).where(OutboxMessage.published_at < now - self.retention))
