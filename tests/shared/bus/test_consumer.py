"""The consumer against a real Valkey: kills, reclaims, dead letters, restarts, load sharing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
import structlog
from asgi_correlation_id import correlation_id

from freqfleet.embedded import EmbeddedValkey
from shared.bus.consumer import ConsumerConfig, Delivery, Handler, StreamConsumer
from shared.bus.dedupe import RedisDeduplicator
from shared.bus.generations import GenerationTracker, skip_stale
from shared.bus.messages import Envelope, GatewayHeartbeat, GatewayHeartbeatData
from shared.bus.publisher import ENVELOPE_FIELD, Publisher, entry_fields
from shared.redis import create_redis
from tests.helpers import free_port, until
from tests.shared.bus.conftest import stop_bot
from trading_gateway.bus.applied import AppliedCommands

REPO = Path(__file__).resolve().parents[3]


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"test:stream:{suffix}", f"group-{suffix}"


@asynccontextmanager
async def running(consumer: StreamConsumer) -> AsyncIterator[StreamConsumer]:
    task = consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop(timeout=10)
        assert not task.cancelled()
        if task.done() and task.exception():
            raise task.exception()  # type: ignore[misc]


def spawn_consumer(redis_url: str, stream: str, group: str, consumer: str, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.shared.bus.consumer_proc", redis_url, stream, group, consumer, mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_killed(proc: subprocess.Popen[bytes]) -> None:
    await until(lambda: proc.poll() is not None, timeout=30, what="the consumer to die")
    assert proc.returncode == -9


async def pending_count(redis: aioredis.Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


def counting_handler(redis: aioredis.Redis, dedupe: RedisDeduplicator, seen: list[Envelope]) -> Handler:
    async def handler(delivery: Delivery) -> None:
        pipe = redis.pipeline(transaction=True)
        pipe.incr(f"effect:{delivery.message.event_id}")
        dedupe.mark_in(pipe, delivery.message.event_id)
        await pipe.execute()
        seen.append(delivery.message)

    return handler


async def test_killed_after_effect_before_ack_is_acked_as_duplicate(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    message = stop_bot()
    await publisher.publish(stream, message)
    proc = spawn_consumer(redis_url, stream, group, "c1", "die-after-effect")
    await wait_killed(proc)
    assert await redis.get(f"effect:{message.event_id}") == b"1"
    assert await pending_count(redis, stream, group) == 1  # effect done, never acked

    dedupe = RedisDeduplicator(redis, group)
    seen: list[Envelope] = []
    consumer = StreamConsumer(
        redis_url,
        ConsumerConfig(stream, group, "c1"),
        counting_handler(redis, dedupe, seen),
        dedupe,
    )
    async with running(consumer):
        await until(lambda: consumer.stats.duplicates == 1, timeout=10, what="the dup")
    assert seen == []
    assert await redis.get(f"effect:{message.event_id}") == b"1"  # once
    assert await pending_count(redis, stream, group) == 0


async def test_killed_before_effect_is_reclaimed_by_another_consumer(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    message = stop_bot()
    await publisher.publish(stream, message)
    await wait_killed(spawn_consumer(redis_url, stream, group, "dead", "die-before-effect"))
    assert await redis.get(f"effect:{message.event_id}") is None
    assert await pending_count(redis, stream, group) == 1

    dedupe = RedisDeduplicator(redis, group)
    seen: list[Envelope] = []
    config = ConsumerConfig(stream, group, "rescuer", claim_idle_ms=300, reclaim_interval_s=0.05)
    consumer = StreamConsumer(redis_url, config, counting_handler(redis, dedupe, seen), dedupe)
    async with running(consumer):
        await until(lambda: len(seen) == 1, timeout=10, what="the reclaimed message")
    assert consumer.stats.reclaimed == 1
    assert seen[0].event_id == message.event_id
    assert await redis.get(f"effect:{message.event_id}") == b"1"
    assert await pending_count(redis, stream, group) == 0


async def test_restarted_consumer_handles_its_own_pending_entries_first(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    old = [stop_bot() for _ in range(3)]
    for message in old:
        await publisher.publish(stream, message)
    await wait_killed(spawn_consumer(redis_url, stream, group, "c1", "die-before-effect"))
    assert await pending_count(redis, stream, group) == 3  # all three were read by c1 in one batch
    new = [stop_bot() for _ in range(2)]
    for message in new:
        await publisher.publish(stream, message)

    dedupe = RedisDeduplicator(redis, group)
    seen: list[Envelope] = []
    consumer = StreamConsumer(
        redis_url, ConsumerConfig(stream, group, "c1"), counting_handler(redis, dedupe, seen), dedupe
    )
    async with running(consumer):
        await until(lambda: len(seen) == 5, timeout=10, what="five messages")
    assert [m.event_id for m in seen] == [m.event_id for m in old + new]
    assert await pending_count(redis, stream, group) == 0


async def test_always_failing_handler_ends_in_dead_letters_and_the_stream_flows(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    poison, good = stop_bot(), stop_bot()
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.message.event_id == poison.event_id:
            raise RuntimeError("exchange said no")
        handled.append(delivery.message.event_id)

    config = ConsumerConfig(stream, group, "c1", max_deliveries=3, claim_idle_ms=100, reclaim_interval_s=0.05)
    consumer = StreamConsumer(redis_url, config, handler)
    async with running(consumer):
        await publisher.publish(stream, poison)
        await publisher.publish(stream, good)
        await until(lambda: consumer.stats.dead_lettered == 1, timeout=15, what="DLQ")
        assert handled == [good.event_id]
    letters = await redis.xrange(config.dead_letter_stream)
    assert len(letters) == 1
    fields = letters[0][1]
    assert fields[b"event_id"] == str(poison.event_id).encode()
    assert fields[b"reason"] == b"handler failed 3 times; last error: RuntimeError: exchange said no"
    assert fields[b"deliveries"] == b"4"
    assert fields[b"source_stream"] == stream.encode()
    assert consumer.stats.handler_errors == 3
    assert await pending_count(redis, stream, group) == 0


async def test_slow_healthy_handler_is_not_reclaimed(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    calls: list[str] = []

    def make(name: str) -> Handler:
        async def handler(delivery: Delivery) -> None:
            calls.append(name)
            await asyncio.sleep(1.2)  # slow work: six times the claim threshold

        return handler

    a = StreamConsumer(
        redis_url, ConsumerConfig(stream, group, "a", claim_idle_ms=200, reclaim_interval_s=0.05), make("a")
    )
    b = StreamConsumer(
        redis_url, ConsumerConfig(stream, group, "b", claim_idle_ms=200, reclaim_interval_s=0.05), make("b")
    )
    async with running(a), running(b):
        await publisher.publish(stream, stop_bot())
        await until(lambda: a.stats.handled + b.stats.handled == 1, timeout=10, what="the slow message")
    assert len(calls) == 1
    assert a.stats.reclaimed == b.stats.reclaimed == 0
    assert await pending_count(redis, stream, group) == 0


async def test_malformed_unknown_and_future_messages_are_dead_lettered(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    good = stop_bot()
    future = stop_bot().model_dump(mode="json") | {"schema_version": 99}
    unknown = stop_bot().model_dump(mode="json") | {"type": "LAUNCH_ROCKET"}
    invalid = stop_bot().model_dump(mode="json")
    invalid["data"]["generation"] = -1
    import json

    raw_entries = [
        {ENVELOPE_FIELD: "{not json"},
        {"something": "else"},
        {ENVELOPE_FIELD: json.dumps(unknown)},
        {ENVELOPE_FIELD: json.dumps(future)},
        {ENVELOPE_FIELD: json.dumps(invalid)},
    ]
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.message.event_id)

    consumer = StreamConsumer(redis_url, ConsumerConfig(stream, group, "c1"), handler)
    async with running(consumer):
        for fields in raw_entries:
            await redis.xadd(stream, fields)
        await publisher.publish(stream, good)
        await until(lambda: handled == [good.event_id], timeout=10, what="the good one")
        assert consumer._task is not None
        assert not consumer._task.done()  # it kept running through all five
    reasons = [f[b"reason"].decode() for _, f in await redis.xrange(f"{stream}:dead")]
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "entry has no 'envelope' field"
    assert reasons[2] == "unknown message type 'LAUNCH_ROCKET'"
    assert reasons[3] == "unsupported schema_version 99 for STOP_BOT"
    assert reasons[4].startswith("invalid STOP_BOT: data.generation: Input should be greater than or equal to 0")
    assert await pending_count(redis, stream, group) == 0


async def test_redis_restart_during_blocking_read_loses_nothing(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path, free_port())
    valkey.start()
    stream, group = names()
    client = create_redis(valkey.url)
    publisher = Publisher(client)
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.message.event_id)

    config = ConsumerConfig(stream, group, "c1", block_ms=30_000, backoff_max_s=0.5)
    consumer = StreamConsumer(valkey.url, config, handler, RedisDeduplicator(client, group))
    try:
        async with running(consumer):
            first = [stop_bot() for _ in range(5)]
            for message in first:
                await publisher.publish(stream, message)
            await until(lambda: len(handled) == 5, timeout=10, what="first five")

            valkey.stop()  # the consumer sits in a 30 s blocking read
            await until(lambda: consumer.stats.reconnects >= 1, timeout=10, what="a reconnect attempt")
            valkey.start()  # same port, same append-only file

            second = [stop_bot() for _ in range(5)]
            for message in second:
                await publisher.publish(stream, message)
            await until(lambda: len(handled) == 10, timeout=20, what="all ten")
        assert handled == [m.event_id for m in first + second]
        assert await pending_count(client, stream, group) == 0
    finally:
        await client.aclose()
        valkey.stop()


async def test_two_consumers_share_the_load_once_each(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    handled: dict[str, list[uuid.UUID]] = {"a": [], "b": []}

    def make(name: str) -> Handler:
        async def handler(delivery: Delivery) -> None:
            await asyncio.sleep(0.002)  # a little work, so both consumers get their turn
            handled[name].append(delivery.message.event_id)

        return handler

    dedupe = RedisDeduplicator(redis, group)
    a = StreamConsumer(redis_url, ConsumerConfig(stream, group, "a", batch=4), make("a"), dedupe)
    b = StreamConsumer(redis_url, ConsumerConfig(stream, group, "b", batch=4), make("b"), dedupe)
    messages = [stop_bot() for _ in range(200)]
    async with running(a), running(b):
        for message in messages:
            await publisher.publish(stream, message)
        await until(lambda: len(handled["a"]) + len(handled["b"]) == 200, timeout=30, what="200 handled")
    assert handled["a"], "consumer a got nothing"
    assert handled["b"], "consumer b got nothing"
    assert sorted(handled["a"] + handled["b"]) == sorted(m.event_id for m in messages)


async def test_stale_generations_are_ignored(redis_url: str, redis: aioredis.Redis, publisher: Publisher) -> None:
    stream, group = names()
    bot, other = uuid.uuid4(), uuid.uuid4()
    applied: list[tuple[uuid.UUID, int]] = []

    @skip_stale(GenerationTracker(redis, group))
    async def handler(delivery: Delivery) -> None:
        data = delivery.message.data
        applied.append((data.bot_id, data.generation))  # type: ignore[attr-defined]

    consumer = StreamConsumer(redis_url, ConsumerConfig(stream, group, "c1"), handler)
    sent = [(bot, 2), (bot, 1), (other, 1), (bot, 2), (bot, 3), (bot, 2)]
    async with running(consumer):
        for bot_id, generation in sent:
            await publisher.publish(stream, stop_bot(generation, bot_id))
        await until(lambda: consumer.stats.handled == 6, timeout=10, what="six acked")
    assert applied == [(bot, 2), (other, 1), (bot, 2), (bot, 3)]


async def test_correlation_id_travels_and_is_bound_in_the_handler(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    seen: list[tuple[str | None, dict[str, object]]] = []

    async def handler(delivery: Delivery) -> None:
        seen.append((correlation_id.get(), structlog.contextvars.get_contextvars()))

    token = correlation_id.set("req-from-http")
    try:
        message = stop_bot()  # no correlation id of its own: the publisher takes the request's
        await publisher.publish(stream, message)
    finally:
        correlation_id.reset(token)
    consumer = StreamConsumer(redis_url, ConsumerConfig(stream, group, "c1"), handler)
    async with running(consumer):
        await until(lambda: len(seen) == 1, timeout=10, what="the message")
    cid, bound = seen[0]
    assert cid == "req-from-http"
    assert bound["correlation_id"] == "req-from-http"
    assert bound["event_id"] == str(message.event_id)
    assert bound["message_type"] == "STOP_BOT"


async def test_entries_trimmed_while_pending_are_counted_and_acked(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    for _ in range(3):
        await publisher.publish(stream, stop_bot())
    await wait_killed(spawn_consumer(redis_url, stream, group, "dead", "die-before-effect"))
    await redis.xtrim(stream, maxlen=0)  # e.g. MAXLEN set far too small
    config = ConsumerConfig(stream, group, "rescuer", claim_idle_ms=100, reclaim_interval_s=0.05)

    async def handler(delivery: Delivery) -> None:
        raise AssertionError("nothing is left to handle")

    consumer = StreamConsumer(redis_url, config, handler)
    async with running(consumer):
        await until(lambda: consumer.stats.trimmed_while_pending == 3, timeout=10, what="three trimmed")
    assert await pending_count(redis, stream, group) == 0


async def test_events_of_any_type_round_trip_through_a_stream(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    from datetime import UTC, datetime

    stream, group = names()
    beat = GatewayHeartbeat(
        source="gateway:gw-1",
        data=GatewayHeartbeatData(
            gateway_id="gw-1", host="h", version="0.1.0", started_at=datetime.now(UTC), bots_running=2, capacity=40
        ),
    )
    entry_id = await publisher.publish(stream, beat)
    stored = (await redis.xrange(stream))[0]
    assert stored[0].decode() == entry_id
    assert stored[1] == {k.encode(): v.encode() for k, v in entry_fields(beat).items()}
    got: list[Envelope] = []

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.message)

    consumer = StreamConsumer(redis_url, ConsumerConfig(stream, group, "c1"), handler)
    async with running(consumer):
        await until(lambda: len(got) == 1, timeout=10, what="the heartbeat")
    assert got == [beat]


async def test_the_sole_reader_trims_what_it_consumed(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher
) -> None:
    stream, group = names()
    for _ in range(500):
        await publisher.publish(stream, stop_bot())
    handled: list[Envelope] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.message)

    config = ConsumerConfig(stream, group, "c1", batch=100, reclaim_interval_s=0.2, trim_consumed_after_s=0)
    async with running(StreamConsumer(redis_url, config, handler)) as consumer:
        # Trimming follows consumption: 400 may be trimmed while the last batch is still being handled.
        await until(
            lambda: len(handled) == 500 and consumer.stats.trimmed >= 400,
            timeout=15,
            what="every entry handled and the consumed ones trimmed",
        )
    assert len(handled) == 500
    assert await redis.xlen(stream) <= 100  # what is left is the last node, whole nodes go


async def test_acks_per_batch_go_out_after_the_batch_and_never_for_a_failed_entry(
    redis_url: str, redis: aioredis.Redis, publisher: Publisher, tmp_path: Path
) -> None:
    """``ack_per_batch`` (the gateway's command consumer, whose deduplicator records on its disk first): one round trip
    of acks after the batch; an entry whose handler failed stays pending; the batch hook hears of the others."""
    stream, group = names()
    messages = [stop_bot() for _ in range(10)]
    entry_ids = [await publisher.publish(stream, m) for m in messages]
    applied = AppliedCommands(tmp_path / "applied.sqlite")
    pending_seen: list[int] = []
    batches: list[tuple[list[uuid.UUID], str]] = []

    async def handler(delivery: Delivery) -> None:
        pending_seen.append(await pending_count(redis, stream, group))
        if delivery.message.event_id == messages[4].event_id:
            raise RuntimeError("this one fails")

    async def after_batch(settled: list[Envelope], through: str) -> None:
        batches.append(([m.event_id for m in settled], through))

    config = ConsumerConfig(stream, group, "c1", ack_per_batch=True, claim_idle_ms=60_000)
    consumer = StreamConsumer(redis_url, config, handler, applied, after_batch=after_batch)
    async with running(consumer):
        await until(lambda: bool(batches), timeout=10, what="the batch")
        assert pending_seen == [10] * 10  # nothing acked while the batch runs
        await until(lambda: consumer.stats.handled == 9, timeout=10, what="the batch's acks")
    assert await pending_count(redis, stream, group) == 1  # the failed one, left for a retry
    pending = await redis.xpending_range(stream, group, min="-", max="+", count=10)
    assert [p["message_id"].decode() for p in pending] == [entry_ids[4]]
    assert batches[0] == ([m.event_id for i, m in enumerate(messages) if i != 4], entry_ids[-1])
    assert applied.count() == 9
    applied.close()
