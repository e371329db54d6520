"""The transactional outbox and the inbox against real PostgreSQL and Valkey."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from management_server.bus.models import OutboxMessage
from management_server.bus.relay import OutboxRelay
from management_server.bus.service import InboxDeduplicator, acknowledge, claim_event, enqueue
from management_server.bus.signing import command_signer, load_command_keys
from management_server.config import ManagementSettings
from management_server.db import create_engine, create_sessionmaker
from management_server.elected import OUTBOX_RELAY_LOCK
from management_server.security.passwords import build_hasher
from management_server.users.models import User
from management_server.users.service import create_user
from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.leases import Holder, holder_of
from shared.bus.messages import (
    BotSpec,
    CommandAccepted,
    CommandAcceptedData,
    StartBot,
    StartBotData,
    StopBot,
    StopBotData,
)
from shared.bus.signing import CommandRefused, verify
from shared.bus.streams import commands_stream
from shared.redis import create_redis
from tests.helpers import async_wait_for, until


@pytest_asyncio.fixture(loop_scope="session")
async def engine(management_settings: ManagementSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(management_settings)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


def command(bot: uuid.UUID | None = None) -> StopBot:
    return StopBot(source="management", data=StopBotData(bot_id=bot or uuid.uuid4(), generation=1))


async def test_outbox_rows_commit_or_roll_back_with_the_state_change(
    engine: AsyncEngine, management_settings: ManagementSettings
) -> None:
    sessionmaker = create_sessionmaker(engine)
    hasher = build_hasher(management_settings)
    kept, dropped = command(), command()
    async with sessionmaker.begin() as session:
        await create_user(session, hasher, "kept@example.com", "a-long-password-1")
        await enqueue(session, commands_stream("gw-1"), kept)
    async with sessionmaker() as session:
        await create_user(session, hasher, "dropped@example.com", "a-long-password-1")
        await enqueue(session, commands_stream("gw-1"), dropped)
        await session.rollback()  # the request failed: neither the user nor the command exists
    async with sessionmaker() as session:
        emails = set((await session.execute(select(User.email))).scalars())
        queued = list((await session.execute(select(OutboxMessage.event_id))).scalars())
    assert emails == {"kept@example.com"}
    assert queued == [kept.event_id]


async def test_crash_between_commit_and_publish_is_published_after_restart_once(
    engine: AsyncEngine, redis: aioredis.Redis, redis_url: str
) -> None:
    sessionmaker = create_sessionmaker(engine)
    stream = commands_stream("gw-crash")
    message = command()
    # The API committed its state change and the command, then "crashed": no relay ran.
    async with sessionmaker.begin() as session:
        await enqueue(session, stream, message)
    assert await redis.xlen(stream) == 0

    relay = OutboxRelay(engine, redis, poll_interval=0.05)  # the restarted process
    relay.start()
    try:
        await until(lambda: relay.published == 1, timeout=10, what="the relay to publish")
    finally:
        await relay.stop()
    entries = await redis.xrange(stream)
    assert len(entries) == 1
    assert entries[0][1][b"event_id"] == str(message.event_id).encode()
    assert await OutboxRelay(engine, redis).publish_pending() == 0  # marked sent: never again

    # A relay that died after XADD but before marking the row re-publishes the same event_id,
    # and a consumer with the inbox applies it once.
    async with sessionmaker.begin() as session:
        await session.execute(update(OutboxMessage).values(published_at=None))
    assert await OutboxRelay(engine, redis).publish_pending() == 1
    entries = await redis.xrange(stream)
    assert [e[1][b"event_id"] for e in entries] == [str(message.event_id).encode()] * 2

    applied: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        async with sessionmaker.begin() as session:
            if await claim_event(session, "gw-crash", delivery.message):
                applied.append(delivery.message.event_id)

    dedupe = InboxDeduplicator(sessionmaker, "gw-crash")
    consumer = StreamConsumer(redis_url, ConsumerConfig(stream, "gw-crash", "c1"), handler, dedupe)
    consumer.start()
    try:
        await until(lambda: consumer.stats.handled + consumer.stats.duplicates == 2, timeout=10, what="both")
    finally:
        await consumer.stop()
    assert applied == [message.event_id]
    assert consumer.stats.duplicates == 1


async def test_the_relay_wakes_on_commit_and_keeps_order(engine: AsyncEngine, redis: aioredis.Redis) -> None:
    sessionmaker = create_sessionmaker(engine)
    stream = commands_stream("gw-order")
    relay = OutboxRelay(engine, redis, poll_interval=30)  # only NOTIFY can wake it in time
    relay.start()
    try:
        await until(lambda: relay._wake.is_set() is False, timeout=5, what="the relay to idle")
        messages = [command() for _ in range(20)]
        for message in messages:
            async with sessionmaker.begin() as session:
                await enqueue(session, stream, message)
        await until(lambda: relay.published == 20, timeout=10, what="twenty published")
    finally:
        await relay.stop()
    ids = [e[1][b"event_id"].decode() for e in await redis.xrange(stream)]
    assert ids == [str(m.event_id) for m in messages]


async def test_relays_of_several_processes_publish_each_command_once_in_order(
    engine: AsyncEngine, redis: aioredis.Redis, management_settings: ManagementSettings
) -> None:
    """Three relays, each with an engine of its own (as three management processes have), woken by every commit
    (NOTIFY) while two writers commit commands a few at a time: every command on the stream once, and each writer's
    in the order it committed them (one relay publishes at a time). A bot's commands are written in that way: one
    transaction after the other, each holding the bot's row. (Across writers, the stream follows commit order,
    not id order: an id is taken at insert, before a slower transaction commits.)"""
    sessionmaker = create_sessionmaker(engine)
    stream = commands_stream("gw-many")
    engines = [create_engine(management_settings) for _ in range(3)]
    relays = [OutboxRelay(e, redis, batch=7, poll_interval=0.2) for e in engines]
    for relay in relays:
        relay.start()
    writers = [[command() for _ in range(60)] for _ in range(2)]
    try:

        async def write(messages: list[StopBot]) -> None:
            for i in range(0, len(messages), 3):  # a few commands per transaction
                async with sessionmaker.begin() as session:
                    for message in messages[i : i + 3]:
                        await enqueue(session, stream, message)

        await asyncio.gather(*(write(messages) for messages in writers))
        await until(lambda: sum(r.published for r in relays) >= 120, timeout=20, what="all published")
    finally:
        for relay in relays:
            await relay.stop()
        for e in engines:
            await e.dispose()
    on_stream = [e[1][b"event_id"].decode() for e in await redis.xrange(stream)]
    assert sorted(on_stream) == sorted(str(m.event_id) for messages in writers for m in messages)  # once each
    for messages in writers:
        mine = {str(m.event_id) for m in messages}
        assert [i for i in on_stream if i in mine] == [str(m.event_id) for m in messages]  # in the writer's order
    assert sum(r.published for r in relays) == 120


async def test_a_relay_that_finds_another_publishing_only_polls_and_takes_over_when_it_ends(
    engine: AsyncEngine, redis: aioredis.Redis
) -> None:
    """With several management processes, each commit wakes every relay; the ones that find another publishing
    stop contending (a transaction per commit, for nothing) and only poll; one takes over when the other ends."""
    sessionmaker = create_sessionmaker(engine)
    stream = commands_stream("gw-elsewhere")
    relay = OutboxRelay(engine, redis, poll_interval=1.0)
    async with engine.connect() as other:  # another process's relay, in the middle of a pass that never ends
        await other.execute(select(func.pg_advisory_lock(OUTBOX_RELAY_LOCK)))
        await other.commit()
        relay.start()
        try:
            await until(lambda: relay.lock_attempts >= 1, timeout=5, what="a first try")
            messages = [command() for _ in range(10)]
            for message in messages:  # ten commits: ten notifications
                async with sessionmaker.begin() as session:
                    await enqueue(session, stream, message)
            await asyncio.sleep(0.3)  # what the notifications would have made it do by now
            assert relay.lock_attempts <= 2
            assert relay.published == 0
            await other.execute(select(func.pg_advisory_unlock(OUTBOX_RELAY_LOCK)))  # that one ended
            await other.commit()
            await until(lambda: relay.published == 10, timeout=5, what="the rows published by this one")
        finally:
            await relay.stop()


async def test_claim_event_is_once_per_group_and_rolls_back_with_the_effect(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    message = command()
    async with sessionmaker() as session:
        assert await claim_event(session, "management", message)
        await session.rollback()  # the effect failed: the event is not recorded either
    async with sessionmaker.begin() as session:
        assert await claim_event(session, "management", message)
    async with sessionmaker.begin() as session:
        assert not await claim_event(session, "management", message)
        assert await claim_event(session, "analytics", message)


async def test_the_relay_signs_every_command_for_its_gateway_alone(
    engine: AsyncEngine, redis: aioredis.Redis, management_settings: ManagementSettings
) -> None:
    keys = load_command_keys(management_settings)
    public = keys.public_keys()[keys.active.kid]
    stream = commands_stream("gw-signed")
    async with create_sessionmaker(engine).begin() as session:
        await enqueue(session, stream, command())
    assert await OutboxRelay(engine, redis, signer=command_signer(keys)).publish_pending() == 1
    [(_, fields)] = await redis.xrange(stream)
    envelope = fields[b"envelope"].decode()
    assert fields[b"sig_kid"].decode() == keys.active.kid
    verify(public, stream, fields, envelope, max_age_ms=60_000)  # signed for this stream
    with pytest.raises(CommandRefused, match="does not match"):
        verify(public, commands_stream("gw-other"), fields, envelope, max_age_ms=60_000)


async def test_a_start_names_its_gateway_the_bots_holder_before_the_command_goes(
    engine: AsyncEngine, redis: aioredis.Redis
) -> None:
    bot_id = uuid.uuid4()
    spec = BotSpec(
        name="held", strategy_class="S", strategy_source="class S: pass", pairs=["BTC/USDT"], timeframe="5m",
        stake_currency="USDT", stake_amount=Decimal(10), max_open_trades=1,
    )  # fmt: skip
    start = StartBot(source="management", data=StartBotData(bot_id=bot_id, generation=4, spec=spec))
    async with create_sessionmaker(engine).begin() as session:
        await enqueue(session, commands_stream("gw-first"), start)
        await enqueue(session, commands_stream("gw-first"), command(bot_id))  # a STOP names nobody
    assert await OutboxRelay(engine, redis).publish_pending() == 2
    assert await holder_of(redis, bot_id) == Holder("gw-first", 4)
    moved = StartBot(source="management", data=StartBotData(bot_id=bot_id, generation=7, spec=spec))
    async with create_sessionmaker(engine).begin() as session:
        await enqueue(session, commands_stream("gw-second"), moved)
    assert await OutboxRelay(engine, redis).publish_pending() == 1
    assert await holder_of(redis, bot_id) == Holder("gw-second", 7)


def _answer(to: StopBot, gateway_id: str) -> CommandAccepted:
    return CommandAccepted(
        source=f"gateway:{gateway_id}",
        data=CommandAcceptedData(command_id=to.event_id, command_type=to.type, bot_id=to.data.bot_id),
    )


async def test_a_command_is_published_again_until_its_gateway_answers_it(
    engine: AsyncEngine, redis: aioredis.Redis
) -> None:
    """Acks end to end: a command stays due until its gateway's answer; one that Redis lost (a failover before it
    was replicated, a FLUSHALL) is published again with the same id, ever less often, until answered or too old."""
    sessionmaker = create_sessionmaker(engine)
    stream = commands_stream("gw-acks")
    answered, lost, notice = command(), command(), command()
    async with sessionmaker.begin() as session:
        await enqueue(session, stream, answered)
        await enqueue(session, stream, lost)
        await enqueue(session, "freqfleet:test-notices", notice)  # no gateway's command: nothing to wait for
    relay = OutboxRelay(engine, redis, poll_interval=0.05, answer_within=1.0)
    relay.start()
    try:
        await until(lambda: relay.published >= 3, timeout=10, what="all three published")
        async with sessionmaker.begin() as session:
            assert await acknowledge(session, _answer(answered, "gw-acks"))
            assert not await acknowledge(session, _answer(answered, "gw-acks"))  # answered once
            assert not await acknowledge(session, _answer(lost, "gw-other"))  # a gateway can't answer for another
        await redis.delete(stream)  # Redis lost what it had of the stream

        async def twice_again() -> list[bytes] | None:
            ids = [fields[b"event_id"] for _, fields in await redis.xrange(stream)]
            return ids if ids.count(str(lost.event_id).encode()) >= 2 else None

        ids = await async_wait_for(twice_again, timeout=15, what="the unanswered command published again, twice")
        assert str(answered.event_id).encode() not in ids  # answered: never again
    finally:
        await relay.stop()
    async with sessionmaker() as session:
        rows = {
            row.event_id: row
            for row in (
                await session.execute(
                    select(OutboxMessage).where(
                        OutboxMessage.event_id.in_([answered.event_id, lost.event_id, notice.event_id])
                    )
                )
            ).scalars()
        }
    assert rows[answered.event_id].acknowledged_at is not None
    assert rows[answered.event_id].republish_at is None
    assert rows[lost.event_id].acknowledged_at is None
    assert rows[lost.event_id].attempts >= 3  # published, then again twice
    republish_at, published_at = rows[lost.event_id].republish_at, rows[lost.event_id].published_at
    assert republish_at is not None
    assert published_at is not None
    assert (republish_at - published_at).total_seconds() >= 2.9  # 1 s, then 2 s, then 4 s: ever less often
    assert rows[notice.event_id].acknowledged_at is not None  # done once published
    assert rows[notice.event_id].republish_at is None
    assert await redis.xlen("freqfleet:test-notices") == 1

    # Too old to be worth sending (a gateway refuses a command older than FREQFLEET_COMMAND_MAX_AGE): given up.
    async with sessionmaker.begin() as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.event_id == lost.event_id).values(republish_at=func.now())
        )
    before = await redis.xlen(stream)
    assert await OutboxRelay(engine, redis, give_up_after=0.5).publish_pending() == 0
    async with sessionmaker() as session:
        row = (await session.execute(select(OutboxMessage).where(OutboxMessage.event_id == lost.event_id))).scalar_one()
    assert row.republish_at is None
    assert row.last_error is not None
    assert "no answer from its gateway" in row.last_error
    assert await redis.xlen(stream) == before
