"""Ignoring stale commands: a bot's generation only moves forward.

The management server bumps a bot's generation with every change of its desired state
and stamps it on the commands it publishes. Commands can reach a gateway out of order
(a reclaimed entry, two management replicas' relays), so a gateway applies a command
only if its generation is at least the newest one it has applied for that bot. The
check-and-record is one Lua script, atomic across the gateway's tasks and restarts.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from shared.bus.consumer import Delivery, Handler
from shared.logging import get_logger

log = get_logger(__name__)

_ACCEPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class GenerationTracker:
    """The newest generation applied per bot, in a Redis hash."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.key = f"freqfleet:generations:{namespace}"
        self._accept = redis.register_script(_ACCEPT)

    async def accept(self, bot_id: uuid.UUID, generation: int) -> bool:
        """True (and recorded) unless a newer generation of this bot was applied already."""
        return bool(await self._accept(keys=[self.key], args=[str(bot_id), generation]))

    async def current(self, bot_id: uuid.UUID) -> int | None:
        value = await self.redis.hget(self.key, str(bot_id))
        return None if value is None else int(value)


def skip_stale(tracker: GenerationTracker) -> Callable[[Handler], Handler]:
    """Wrap a handler so commands carrying an old generation of their bot are acked, not applied."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(delivery: Delivery) -> None:
            data: Any = delivery.message.data
            bot_id = getattr(data, "bot_id", None)
            generation = getattr(data, "generation", None)
            stale = (
                isinstance(bot_id, uuid.UUID)
                and isinstance(generation, int)
                and not await tracker.accept(bot_id, generation)
            )
            if stale:
                log.info(
                    "stale command ignored",
                    bot_id=str(bot_id),
                    generation=generation,
                    current=await tracker.current(bot_id) if isinstance(bot_id, uuid.UUID) else None,
                    message_type=delivery.message.type,
                )
                return
            await handler(delivery)

        return wrapper

    return decorate
