"""The gateway's event publisher and its outbox, against a real Valkey that is away, then back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from freqfleet.embedded import EmbeddedValkey
from shared.bus.messages import BotStatus, BotStatusData, BotStopped, BotStoppedData, Envelope, decode
from shared.bus.publisher import Publisher, entry_fields
from shared.bus.signing import EVENT_DOMAIN, SIGNATURE_FIELD, EntrySigner
from shared.bus.streams import EVENTS_STREAM
from shared.redis import create_redis
from tests.helpers import free_port, until
from trading_gateway.bus.events import EventPublisher


def stopped(n: int) -> BotStopped:
    return BotStopped(source="gateway:gw", data=BotStoppedData(bot_id=uuid.uuid4(), generation=n, reason=f"#{n}"))


def status() -> BotStatus:
    return BotStatus(source="gateway:gw", data=BotStatusData(bot_id=uuid.uuid4(), generation=1, state="running"))


async def stream(url: str) -> list[Envelope]:
    client = aioredis.Redis.from_url(url)
    try:
        return [decode(fields[b"envelope"]) for _, fields in await client.xrange(EVENTS_STREAM)]
    finally:
        await client.aclose()


async def test_the_outbox_keeps_order_and_skips_a_torn_line(redis_url: str, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.jsonl"
    first, second, third = stopped(1), stopped(2), stopped(3)
    # Left by an earlier gateway: two entries around a line torn by a crash.
    lines = [json.dumps(entry_fields(first)), '{"type": "BOT_STO', json.dumps(entry_fields(second))]
    outbox.write_text("\n".join(lines) + "\n")
    client = create_redis(redis_url)
    events = EventPublisher(Publisher(client), outbox)
    try:
        assert events.pending == 3
        assert await events.publish(third) is False  # behind the queue, not ahead of it
        assert events.pending == 4
        assert await events.flush() == 3
        assert not outbox.exists()
        assert [e.event_id for e in await stream(redis_url)] == [first.event_id, second.event_id, third.event_id]
        assert await events.publish(stopped(4)) is True  # straight to the stream again
    finally:
        await client.aclose()


async def test_events_wait_for_redis_and_snapshots_are_dropped(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", free_port())  # not started yet: Redis is away
    client = create_redis(valkey.url, socket_timeout=2.0, retries=0)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", flush_interval=0.1)
    events.start()
    try:
        facts = [stopped(1), stopped(2)]
        assert await events.publish(facts[0]) is False
        assert await events.publish(status()) is False  # a snapshot: dropped, the next one supersedes it
        assert await events.publish(facts[1]) is False
        assert (events.pending, events.dropped) == (2, 1)
        queued = [json.loads(line)["event_id"] for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
        assert queued == [str(f.event_id) for f in facts]

        valkey.start()
        await until(lambda: events.pending == 0, timeout=15, what="the outbox to be flushed")
        assert [e.event_id for e in await stream(valkey.url)] == [f.event_id for f in facts]
        assert not (tmp_path / "outbox.jsonl").exists()
    finally:
        await events.stop()
        await client.aclose()
        valkey.stop()


async def test_answers_queued_for_after_the_batch_go_out_in_order_under_one_signature(
    redis_url: str, tmp_path: Path
) -> None:
    client = create_redis(redis_url)
    signer = EntrySigner(Ed25519PrivateKey.generate(), "gw", EVENT_DOMAIN)
    events = EventPublisher(Publisher(client, signer=signer), tmp_path / "outbox.jsonl")
    try:
        before = len(await stream(redis_url))
        first, second, third = stopped(1), stopped(2), stopped(3)
        events.publish_later(first)
        events.publish_later(second)
        assert len(await stream(redis_url)) == before  # not yet: they wait for the end of the batch
        assert await events.flush_later() == 2
        assert await events.flush_later() == 0  # nothing twice

        # Queued, then another event published at once: the queued ones go first.
        events.publish_later(third)
        fourth = stopped(4)
        assert await events.publish(fourth)
        sent = await stream(redis_url)
        assert [e.event_id for e in sent[before:]] == [m.event_id for m in (first, second, third, fourth)]
        raw = await client.xrange(EVENTS_STREAM)
        signatures = [fields[SIGNATURE_FIELD.encode()] for _, fields in raw[before : before + 2]]
        assert signatures[0] == signatures[1]  # a batch: one signature
    finally:
        await client.aclose()


async def test_answers_queued_while_redis_is_away_wait_in_the_outbox(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", free_port())  # not started: Redis is away
    client = create_redis(valkey.url, socket_timeout=2.0, retries=0)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", flush_interval=0.1)
    try:
        answers = [stopped(1), stopped(2)]
        for answer in answers:
            events.publish_later(answer)
        assert await events.flush_later() == 0
        assert events.pending == 2  # kept, in order, for when Redis answers
        valkey.start()
        assert await events.flush() == 2
        assert [e.event_id for e in await stream(valkey.url)] == [a.event_id for a in answers]
    finally:
        await client.aclose()
        valkey.stop()
