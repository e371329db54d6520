"""Analytics answers cached in Redis, invalidated by new trades.

Each answer depends on one *scope*: a bot (``bot:<id>``), a user's bots (``user:<id>``) or the
whole fleet (``fleet``). Every scope has a version counter; a new or changed trade of a bot bumps
the versions of the bot, its owner and the fleet (:meth:`AnalyticsCache.invalidate`, one pipeline).
An answer is stored with the version it was computed under, and read in the same round trip as the
current version: a stored answer of an older version is a miss. So an answer computed while a trade
arrived is never served as fresh (it carries the version read *before* the computation), with no
lock and no delete race, and every management replica sees the same versions.

Answers also expire after ``ttl`` seconds, for what changes them without a trade (a bot deleted, a
bot's wallet changed while stopped). Within one process, concurrent misses of one key share one
computation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from shared.logging import get_logger

log = get_logger(__name__)

PREFIX = "freqfleet:analytics"


def bot_scope(bot_id: uuid.UUID) -> str:
    return f"bot:{bot_id}"


def user_scope(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


FLEET_SCOPE = "fleet"


class AnalyticsCache:
    def __init__(self, redis: aioredis.Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _version_key(scope: str) -> str:
        return f"{PREFIX}:version:{scope}"

    @staticmethod
    def _answer_key(scope: str, variant: str) -> str:
        return f"{PREFIX}:answer:{scope}:{variant}"

    async def invalidate(self, bot_id: uuid.UUID, owner_id: uuid.UUID) -> None:
        """A trade of this bot changed: answers about the bot, its owner and the fleet are stale."""
        pipe = self.redis.pipeline(transaction=False)
        for scope in (bot_scope(bot_id), user_scope(owner_id), FLEET_SCOPE):
            pipe.incr(self._version_key(scope))
        await pipe.execute()

    async def version(self, scope: str) -> int:
        raw = await self.redis.get(self._version_key(scope))
        return int(raw or 0)

    async def get_or_compute(self, scope: str, variant: str, compute: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
        """The answer (JSON text) and whether it came from the cache."""
        key = self._answer_key(scope, variant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._version_key(scope))
        pipe.get(key)
        raw_version, stored = await pipe.execute()
        version = int(raw_version or 0)
        if stored is not None:
            text = stored.decode() if isinstance(stored, bytes) else str(stored)
            stored_version, _, body = text.partition("\n")
            if stored_version == str(version):
                self.hits += 1
                return body, True
        self.misses += 1
        flight_key = f"{key}@{version}"
        running = self._inflight.get(flight_key)
        if running is not None:
            return await asyncio.shield(running), False
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[flight_key] = future
        try:
            body = await compute()
            future.set_result(body)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(flight_key, None)
        try:
            await self.redis.set(key, f"{version}\n{body}", ex=max(1, int(self.ttl)))
        except Exception as exc:  # the answer is right; only the next request pays again
            log.warning("analytics answer not cached", error=f"{type(exc).__name__}: {exc}")
        return body, False


def dumps(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
