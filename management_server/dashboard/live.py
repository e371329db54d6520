"""The dashboard's live feed: a bot's new row pushed to the pages that show it, within a moment of its change.

Any change to a bot made through a session of this app (a gateway's report applied by the events consumer, a
request, the risk guard, an emergency stop) is noticed when its transaction commits (``track``: the bots the session
changed, ``bots/changes.py``: its ORM flushes, and what statements of their own said they changed), and the bot ids
are published on a Redis channel, a few at a time (``DEBOUNCE``). Every management process listens to that channel
(the events consumer runs in one of them, the pages are served by all): it reads the changed bots' rows once
(``service.fleet_rows``) and hands each page what it may see (an admin everything, with owners; a user their own
bots). A bot that is gone is sent as ``gone``. Pages read the feed as Server-Sent Events (``GET
/api/v1/dashboard/live``); a page that falls behind (its queue full) is dropped, and reconnects to read the fleet
afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from management_server.bots import changes
from management_server.dashboard import service
from management_server.users.viewer import Viewer
from shared.logging import get_logger

log = get_logger(__name__)

CHANNEL = "freqfleet:live:bots"
DEBOUNCE = 0.1  # seconds: changes are sent together, at most this late


async def settled(ready: asyncio.Event) -> None:
    """Once ``ready`` is set, ``DEBOUNCE`` more for what comes with it; then cleared for the next batch."""
    await ready.wait()
    await asyncio.sleep(DEBOUNCE)
    ready.clear()


async def cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """``tasks`` cancelled and awaited."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


QUEUE = 512  # events a page may be behind before it is dropped
KEEPALIVE = 15.0
_FEED = "freqfleet.live_feed"


@dataclass(eq=False)  # each page is itself (kept in a set)
class Client:
    viewer: Viewer
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: bool = False

    def offer(self, event_bytes: bytes) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(event_bytes)
        except asyncio.QueueFull:
            self.dropped = True  # it reconnects and reads the fleet afresh


def sse(kind: str, data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data, option=orjson.OPT_UTC_Z) + b"\n\n"


class LiveFeed:
    def __init__(self, redis: aioredis.Redis, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.clients: set[Client] = set()
        self._outgoing: dict[uuid.UUID, uuid.UUID] = {}  # bot -> its owner
        self._incoming: dict[uuid.UUID, uuid.UUID] = {}
        self._out_ready = asyncio.Event()
        self._in_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ announcing

    def changed(self, bots: dict[uuid.UUID, uuid.UUID]) -> None:
        """Bots changed (their transaction committed; bot id -> owner id): announced to every process shortly."""
        self._outgoing.update(bots)
        self._out_ready.set()

    async def _announce(self) -> None:
        while True:
            await settled(self._out_ready)
            ids, self._outgoing = self._outgoing, {}
            try:
                await self.redis.publish(CHANNEL, orjson.dumps({str(b): str(o) for b, o in ids.items()}))
            except Exception as exc:  # Redis away: pages miss these updates until they reload
                log.warning("live feed: changes not announced", error=f"{type(exc).__name__}: {exc}", count=len(ids))

    # ------------------------------------------------------------------ delivering

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(CHANNEL)
                try:
                    async for message in pubsub.listen():
                        with contextlib.suppress(ValueError, TypeError, AttributeError):
                            announced = orjson.loads(message["data"])
                            self._incoming.update({uuid.UUID(b): uuid.UUID(o) for b, o in announced.items()})
                            self._in_ready.set()
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live feed: listening again", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)

    async def _deliver(self) -> None:
        while True:
            await settled(self._in_ready)
            ids, self._incoming = self._incoming, {}
            if not self.clients:
                continue
            try:
                async with self.sessionmaker() as session:
                    rows = await service.fleet_rows(session, None, ids)
            except Exception as exc:
                log.warning("live feed: rows not read", error=f"{type(exc).__name__}: {exc}")
                continue
            found = {uuid.UUID(r["id"]) for r in rows}
            self.push(rows, {bot: owner for bot, owner in ids.items() if bot not in found})

    def push(
        self,
        rows: list[dict[str, Any]],
        gone: dict[uuid.UUID, uuid.UUID],
        *,
        event: str = "bot",
        gone_event: str = "gone",
    ) -> None:
        """Hand each page what it may see: the rows (each with its ``owner_id``; a bot's with its owner's email too,
        which only an admin sees) as ``event``, and what is gone (id -> owner id) as ``gone_event``."""
        events: list[tuple[str, bytes, bytes]] = [  # owner, an admin's event, the owner's event
            (row["owner_id"], sse(event, row), sse(event, {k: v for k, v in row.items() if k != "owner"}))
            for row in rows
        ]
        for thing, its_owner in gone.items():
            event_bytes = sse(gone_event, {"id": str(thing)})
            events.append((str(its_owner), event_bytes, event_bytes))
        for client in list(self.clients):
            mine = str(client.viewer.user.id)
            for owner_id, for_admin, for_owner in events:
                if client.viewer.admin:
                    client.offer(for_admin)
                elif owner_id == mine:
                    client.offer(for_owner)

    async def stream(self, viewer: Viewer, until: float) -> AsyncIterator[bytes]:
        """One page's events until the loop's time ``until`` (its token's expiry), keepalives between."""
        client = Client(viewer)
        self.clients.add(client)
        loop = asyncio.get_running_loop()
        try:
            yield sse("ready", {"admin": viewer.admin})
            while not client.dropped and loop.time() < until:
                try:
                    async with asyncio.timeout(min(KEEPALIVE, max(0.0, until - loop.time()))):
                        yield await client.queue.get()
                except TimeoutError:
                    yield b": keepalive\n\n"
        finally:
            self.clients.discard(client)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(coroutine, name=f"live-feed-{i}")
            for i, coroutine in enumerate((self._announce(), self._listen(), self._deliver()))
        ]

    async def stop(self) -> None:
        await cancelled(self._tasks)


def track(sessionmaker: async_sessionmaker[AsyncSession], feed: LiveFeed) -> None:
    """Sessions of ``sessionmaker`` tell ``feed`` which bots their committed transactions changed."""
    sessionmaker.configure(info={changes.TRACKED: True, _FEED: feed})


@event.listens_for(Session, "after_commit")
def _announce_changed_bots(session: Session) -> None:
    changed = changes.take(session)
    feed = session.info.get(_FEED)
    if changed and isinstance(feed, LiveFeed):
        feed.changed(changed)
