"""The models page's live rows: a model version changed by anyone (a request, the training worker's progress, a
gateway's report applied) is pushed to the pages that may see it.

PostgreSQL says which rows changed (migration 0012: a trigger NOTIFYs each row's id and owner on
``freqfleet_models`` when its transaction commits), so no writer has to, in whatever process it runs. Every
management process LISTENs on a connection of its own, reads the changed rows once (a few at a time:
``live.DEBOUNCE``) and hands them to the live feed's pages (``LiveFeed.push``: ``event: model`` with the row as
``GET /api/v1/models`` lists it, ``event: model_gone`` for a deleted one). A page that connects later reads the list
afresh, so nothing is kept for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from management_server.dashboard.live import LiveFeed, cancelled, settled
from management_server.db import listen
from management_server.freqai.models import ModelVersion
from management_server.freqai.schemas import ModelOut
from shared.logging import get_logger

log = get_logger(__name__)

CHANNEL = "freqfleet_models"  # NOTIFYed by model_versions' trigger (migration 0012)


class ModelFeed:
    def __init__(self, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], feed: LiveFeed) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.feed = feed
        self._changed: dict[uuid.UUID, tuple[uuid.UUID, bool]] = {}  # model -> (its owner, deleted)
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _notified(self, payload: str) -> None:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            note = orjson.loads(payload)
            self._changed[uuid.UUID(note["id"])] = (uuid.UUID(note["owner"]), bool(note["gone"]))
            self._ready.set()

    async def _listen(self) -> None:
        """LISTEN (``db.listen``: reconnects when it drops; what changed meanwhile is not pushed: the pages read the
        list again when they come back, and a training's next step is pushed)."""
        await listen(self.engine, CHANNEL, self._notified, what="model feed")

    async def _deliver(self) -> None:
        while True:
            await settled(self._ready)
            changed, self._changed = self._changed, {}
            if not self.feed.clients:
                continue
            wanted = [model for model, (_, gone) in changed.items() if not gone]
            try:
                async with self.sessionmaker() as session:
                    found = (await session.execute(select(ModelVersion).where(ModelVersion.id.in_(wanted)))).scalars()
                    rows = [ModelOut.model_validate(model).model_dump(mode="json") for model in found]
            except Exception as exc:
                log.warning("model feed: rows not read", error=f"{type(exc).__name__}: {exc}")
                continue
            present = {uuid.UUID(row["id"]) for row in rows}
            gone = {model: owner for model, (owner, _) in changed.items() if model not in present}
            self.feed.push(rows, gone, event="model", gone_event="model_gone")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="model-feed-listen"),
            asyncio.create_task(self._deliver(), name="model-feed-deliver"),
        ]

    async def stop(self) -> None:
        await cancelled(self._tasks)
