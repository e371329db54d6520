"""Streams bounded by time: a burst can't push out what is not consumed; consumed entries are trimmed by their
reader; the oldest unconsumed entry of each group is known (real Valkey)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from shared.bus.backlog import backlogs, parse_id, trim_consumed
from shared.bus.publisher import Publisher
from shared.bus.streams import EVENTS_STREAM, Retention, entry_time, id_at
from tests.shared.bus.conftest import stop_bot

STREAM = "freqfleet:test-backlog"


async def add_old(redis: aioredis.Redis, stream: str, count: int, start: float) -> list[str]:
    """``count`` entries, one millisecond apart from ``start`` (Unix time)."""
    first = int(start * 1000)
    pipe = redis.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, {"n": str(n)}, id=f"{first + n}-0")
    return [e.decode() for e in await pipe.execute()]


async def test_each_group_knows_its_oldest_unconsumed_entry(redis: aioredis.Redis) -> None:
    assert await backlogs(redis, STREAM) == []  # no stream
    ids = await add_old(redis, STREAM, 5, time.time() - 60)
    assert await backlogs(redis, STREAM) == []  # nobody consumes it
    await redis.xgroup_create(STREAM, "reader", id="0")
    await redis.xgroup_create(STREAM, "idle", id="0")
    await redis.xreadgroup("reader", "c", {STREAM: ">"}, count=3)
    await redis.xack(STREAM, "reader", ids[0], ids[2])  # ids[1] delivered, not acknowledged

    found = {g.group: g for g in await backlogs(redis, STREAM)}
    assert found["reader"].oldest_unconsumed == ids[1]
    assert (found["reader"].pending, found["reader"].lag) == (1, 2)
    assert found["idle"].oldest_unconsumed == ids[0]
    assert 59 < time.time() - entry_time(ids[0]) < 120

    await redis.xack(STREAM, "reader", ids[1])
    await redis.xreadgroup("reader", "c", {STREAM: ">"})
    await redis.xack(STREAM, "reader", *ids[3:])
    reader = next(g for g in await backlogs(redis, STREAM) if g.group == "reader")
    assert reader.oldest_unconsumed is None
    assert parse_id(reader.consumed_below) > parse_id(ids[-1])


async def test_trimming_consumed_keeps_what_any_group_still_needs(redis: aioredis.Redis) -> None:
    now = time.time()
    ids = await add_old(redis, STREAM, 1000, now - 3600)
    await redis.xgroup_create(STREAM, "reader", id="0")
    await redis.xreadgroup("reader", "c", {STREAM: ">"}, count=1000)
    await redis.xack(STREAM, "reader", *ids[:600])  # the rest is delivered, not acknowledged

    trimmed = await trim_consumed(redis, STREAM, keep=600, now=now)
    assert 500 <= trimmed <= 600  # whole nodes of 100 entries, never past the first unconsumed one
    first: list[tuple[bytes, object]] = await redis.xrange(STREAM, count=1)  # type: ignore[assignment]
    assert parse_id(first[0][0].decode()) <= parse_id(ids[600])
    assert (await backlogs(redis, STREAM))[0].lag == 0  # Redis still tells the lag after the trim

    # A group that has not read anything holds every entry.
    await redis.xgroup_create(STREAM, "late", id="0")
    await redis.xack(STREAM, "reader", *ids[600:])
    assert await trim_consumed(redis, STREAM, keep=600, now=now) == 0
    await redis.xgroup_destroy(STREAM, "late")
    assert await trim_consumed(redis, STREAM, keep=600, now=now) > 0

    # Entries younger than ``keep`` stay, consumed or not.
    recent = await add_old(redis, STREAM, 300, now - 60)
    await redis.xreadgroup("reader", "c", {STREAM: ">"})
    await redis.xack(STREAM, "reader", *recent)
    await trim_consumed(redis, STREAM, keep=600, now=now)
    assert await redis.xlen(STREAM) >= 300


async def test_events_are_bounded_by_age_so_a_burst_trims_nothing_young(redis: aioredis.Redis) -> None:
    publisher = Publisher(redis, retention=Retention(events_max_age=600))
    old = await add_old(redis, EVENTS_STREAM, 300, time.time() - 700)  # older than the limit
    for _ in range(5000):  # a burst far past any count the stream was capped at
        await publisher.publish(EVENTS_STREAM, stop_bot())
    left = await redis.xlen(EVENTS_STREAM)
    assert 5000 <= left < 5300  # every young entry is there; the old ones went, node by node
    first: list[tuple[bytes, object]] = await redis.xrange(EVENTS_STREAM, count=1)  # type: ignore[assignment]
    assert parse_id(first[0][0].decode()) > parse_id(old[199])
    assert Retention(events_max_age=600).trim(EVENTS_STREAM, 1000.0) == {"minid": id_at(400.0), "approximate": True}
