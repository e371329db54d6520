"""Remembering which messages were applied, so a redelivered one is acked, not re-applied.

Delivery is at least once: a consumer that dies after a message's effect but before its
XACK gets the message again. An effect happens once only if recording "applied" is
atomic with the effect itself. Where the effect is in Redis, put ``mark_in`` in the
same MULTI as the effect; where it is in PostgreSQL, the management server's inbox
(``management_server.bus.service.claim_event``) records it in the effect's transaction.
The consumer also marks after a successful handler, in the MULTI that acks the entry,
which covers handlers whose effect is naturally idempotent (an already running bot is
not started twice).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from shared.bus.messages import Envelope

DEFAULT_TTL_SECONDS = 7 * 24 * 3600


class Deduplicator(Protocol):
    async def processed_among(self, messages: Sequence[Envelope]) -> set[uuid.UUID]:
        """The event ids among ``messages`` that were applied already."""
        ...

    async def mark_processed(self, message: Envelope, pipe: Pipeline) -> None:
        """Record ``message`` as applied: queue it in ``pipe`` (the MULTI that acks it) or store it itself."""
        ...


class RedisDeduplicator:
    """Processed event ids as Redis keys with a TTL well above any redelivery window."""

    def __init__(self, redis: aioredis.Redis, namespace: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds

    def key(self, event_id: uuid.UUID) -> str:
        return f"freqfleet:processed:{self.namespace}:{event_id}"

    async def processed_among(self, messages: Sequence[Envelope]) -> set[uuid.UUID]:
        pipe = self.redis.pipeline(transaction=False)
        for message in messages:
            pipe.exists(self.key(message.event_id))
        found = await pipe.execute()
        return {m.event_id for m, hit in zip(messages, found, strict=True) if hit}

    async def mark_processed(self, message: Envelope, pipe: Pipeline) -> None:
        self.mark_in(pipe, message.event_id)

    def mark_in(self, pipe: Pipeline, event_id: uuid.UUID) -> None:
        """Queue the mark in a MULTI pipeline, to commit it with the effect."""
        pipe.set(self.key(event_id), 1, ex=self.ttl_seconds)
