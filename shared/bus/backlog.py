"""What a stream's consumer groups have not consumed yet, and trimming what all of them have.

An entry is *consumed* by a group once it was delivered to it and acknowledged: its id is at most the group's
``last-delivered-id`` and it is not in the group's pending list. The oldest entry some group has not consumed
bounds what may be trimmed (``trim_consumed``) and says how close the backlog is to the stream's age limit
(``freqfleet_bus_oldest_unconsumed_age_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.bus.streams import id_at


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


@dataclass(frozen=True)
class GroupBacklog:
    group: str
    last_delivered: str
    oldest_unconsumed: str | None  # None: the group has consumed everything
    pending: int = 0  # delivered, not acknowledged
    lag: int | None = None  # not delivered yet (Redis can't tell after some deletions)

    @property
    def consumed_below(self) -> str:
        """Every entry with a smaller id is consumed by this group."""
        return self.oldest_unconsumed or next_id(self.last_delivered)


async def backlogs(redis: aioredis.Redis, stream: str) -> list[GroupBacklog]:
    """Each consumer group of ``stream`` with the oldest entry it has not consumed (empty: no stream, no group)."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:  # no such stream
        return []
    if not groups:
        return []
    pipe = redis.pipeline(transaction=False)
    for group in groups:
        name = _text(group["name"])
        pipe.xpending(stream, name)
        pipe.xrange(stream, min="(" + _text(group["last-delivered-id"]), count=1)
    answers = await pipe.execute()
    found = []
    for index, group in enumerate(groups):
        summary, undelivered = answers[2 * index], answers[2 * index + 1]
        candidates = []
        if summary and summary.get("pending"):
            candidates.append(_text(summary["min"]))
        if undelivered:
            candidates.append(_text(undelivered[0][0]))
        oldest = min(candidates, key=parse_id) if candidates else None
        lag = group.get("lag")
        found.append(
            GroupBacklog(
                _text(group["name"]),
                _text(group["last-delivered-id"]),
                oldest,
                pending=int(group.get("pending") or 0),
                lag=None if lag is None else int(lag),
            )
        )
    return found


async def trim_consumed(redis: aioredis.Redis, stream: str, *, keep: float, now: float) -> int:
    """Trim the entries of ``stream`` that every group has consumed and that are older than ``keep`` seconds
    (kept that long for people reading with ``XRANGE``); returns how many went. A stream nobody consumes is left
    to its age limit."""
    found = await backlogs(redis, stream)
    if not found:
        return 0
    bound = min([id_at(now - keep), *(g.consumed_below for g in found)], key=parse_id)
    return int(await redis.xtrim(stream, minid=bound, approximate=True))
