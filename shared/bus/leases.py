"""Which gateway holds a bot: leases in Redis, fenced by the management server's word.

Two kinds of keys, each written by one side only:

- ``freqfleet:holder:{bot_id}`` (a string, written by the management server when it places the bot on a gateway:
  a start, a failover, a drain): ``"<gateway id> <generation>"``. Gateways may only read it (their ACL).
- ``freqfleet:leases:{gateway_id}`` (a hash, written by that gateway alone): for each bot it runs,
  ``"<generation> <expires at, ms of the Redis server's clock>"``. The gateway rewrites the whole hash at every renewal
  (:func:`renew`, one script: one round trip for all its bots), so a bot it no longer runs drops out of it. The hash
  itself never expires: a gateway that dies leaves its last leases behind, expired, which is how the management
  server tells "its lease ended" (fail over) from "it never had one" (a gateway without leases).

A renewal keeps only the bots whose holder is this gateway (or that have no holder yet: a bot placed before
leases existed) and returns the others, with the holder the management server names: the gateway has lost them
and must stop them without starting them again (a gateway frozen for longer than its leases, then resumed).
Expiry is judged on Redis's clock alone (``TIME`` in the scripts), so hosts' clocks never matter.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

HOLDER_PREFIX = "freqfleet:holder:"
LEASES_PREFIX = "freqfleet:leases:"

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

# KEYS: the gateway's leases hash; ARGV: ttl (ms), the gateway id, then per bot its id and generation. The holder
# keys are read inside (not declared: EVAL needs write access to every declared key, and a gateway may only read
# them; a single Redis or Valkey, not a cluster, so one script sees every key).
_RENEW = f"""
{_NOW}
local ttl = tonumber(ARGV[1])
local me = ARGV[2]
local lost = {{}}
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do
  local bot = ARGV[i]
  local holder = redis.call('GET', '{HOLDER_PREFIX}' .. bot)
  if holder == false or string.match(holder, '^(%S+)') == me then
    redis.call('HSET', KEYS[1], bot, ARGV[i + 1] .. ' ' .. (now + ttl))
  else
    table.insert(lost, bot)
    table.insert(lost, holder)
  end
end
return {{now, lost}}
"""

# KEYS: the gateway's leases hash. The hash and the server's time, read together.
_READ = f"""
{_NOW}
return {{now, redis.call('HGETALL', KEYS[1])}}
"""


def holder_key(bot_id: uuid.UUID | str) -> str:
    return f"{HOLDER_PREFIX}{bot_id}"


def leases_key(gateway_id: str) -> str:
    return f"{LEASES_PREFIX}{gateway_id}"


@dataclass(frozen=True)
class Holder:
    gateway_id: str
    generation: int

    @classmethod
    def parse(cls, text: str | bytes) -> Holder:
        raw = text.decode() if isinstance(text, bytes) else text
        gateway_id, _, generation = raw.partition(" ")
        return cls(gateway_id, int(generation or 0))

    def __str__(self) -> str:
        return f"{self.gateway_id} {self.generation}"


@dataclass(frozen=True)
class Renewal:
    now_ms: int  # the Redis server's clock
    lost: dict[str, Holder]  # bots this gateway runs that another now holds, and who


@dataclass(frozen=True)
class Lease:
    generation: int
    expires_ms: int


@dataclass(frozen=True)
class Leases:
    now_ms: int
    held: dict[str, Lease]  # bot id -> its lease on this gateway

    def alive(self, bot_id: str) -> bool:
        lease = self.held.get(bot_id)
        return lease is not None and lease.expires_ms > self.now_ms


async def set_holder(redis: Any, bot_id: uuid.UUID | str, gateway_id: str, generation: int) -> None:
    """The management server's word: bot ``bot_id`` runs on ``gateway_id`` from ``generation`` on."""
    await redis.set(holder_key(bot_id), str(Holder(gateway_id, generation)))


async def holder_of(redis: Any, bot_id: uuid.UUID | str) -> Holder | None:
    found = await redis.get(holder_key(bot_id))
    return None if found is None else Holder.parse(found)


async def renew(redis: Any, gateway_id: str, bots: dict[str, int], ttl_ms: int) -> Renewal:
    """Gateway ``gateway_id``'s leases on ``bots`` (id -> generation) for ``ttl_ms`` more, each one it still holds."""
    args: list[Any] = [ttl_ms, gateway_id]
    for bot_id, generation in bots.items():
        args += [str(uuid.UUID(bot_id)), generation]  # a bot id, nothing else, is ever part of a key name
    now, lost = await redis.eval(_RENEW, 1, leases_key(gateway_id), *args)
    pairs = [x.decode() if isinstance(x, bytes) else str(x) for x in lost]
    return Renewal(int(now), {pairs[i]: Holder.parse(pairs[i + 1]) for i in range(0, len(pairs), 2)})


async def leases_of(redis: Any, gateway_id: str) -> Leases:
    """What gateway ``gateway_id`` holds now, by the Redis server's clock."""
    now, flat = await redis.eval(_READ, 1, leases_key(gateway_id))
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    held = {}
    for i in range(0, len(items), 2):
        generation, _, expires = items[i + 1].partition(" ")
        held[items[i]] = Lease(int(generation), int(expires))
    return Leases(int(now), held)
