"""The gateway keeps its events until the management server's receipt, against a real Valkey: an event Redis lost
(the management server read past it, never confirmed it) is published again with its id; one the management
server has not reached yet is not, however long it waits; one confirmed is forgotten, on disk too."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from management_server.events.receipts import receipt_sender
from shared.bus.messages import BotStatus, BotStatusData, BotStopped, BotStoppedData, McpCall, decode
from shared.bus.publisher import Publisher
from shared.bus.receipts import entry_key, needs_receipt, receipts_stream
from shared.bus.streams import EVENTS_STREAM
from shared.redis import create_redis
from trading_gateway.bus.events import EventPublisher
from trading_gateway.bus.receipts import MAX_RESENDS, AwaitingReceipts

GATEWAY = "gw-receipts"


def stopped(n: int) -> BotStopped:
    return BotStopped(source=f"gateway:{GATEWAY}", data=BotStoppedData(bot_id=uuid.uuid4(), generation=n))


_skipped = [0.0]


def later() -> float:
    """Each call, 10 minutes later than the last: past any wait for a receipt (at most 5 minutes apart), and a few
    calls stay well within the time an event is kept (6 h)."""
    _skipped[0] += 600
    return time.time() + _skipped[0]


async def on_stream(client: aioredis.Redis) -> dict[uuid.UUID, str]:
    """Each event on the stream: its newest entry id."""
    return {decode(fields[b"envelope"]).event_id: eid.decode() for eid, fields in await client.xrange(EVENTS_STREAM)}


async def test_events_wait_for_their_receipt_and_what_redis_lost_is_sent_again(redis_url: str, tmp_path: Path) -> None:
    client = create_redis(redis_url)
    path = tmp_path / "receipts.sqlite"
    receipts = AwaitingReceipts(path, receipts_stream(GATEWAY), within=1.0)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", receipts=receipts)
    management = receipt_sender(client)  # the management server's side, after each batch it applied
    try:
        a, b, c = stopped(1), stopped(2), stopped(3)
        status = BotStatus(
            source=f"gateway:{GATEWAY}", data=BotStatusData(bot_id=uuid.uuid4(), generation=1, state="running")
        )
        for event in (a, b, c, status):
            assert await events.publish(event)
        assert receipts.count() == 3  # a status is superseded seconds later: no receipt needed
        assert not needs_receipt(status.type)
        assert not needs_receipt("COMMAND_ACCEPTED")
        assert needs_receipt(McpCall.model_fields["type"].default)
        ids = await on_stream(client)

        # The management server applied A and read nothing further: B and C wait, never sent twice.
        await management([a], ids[a.event_id])
        assert await events.check_receipts(later()) == (1, 0)
        assert await events.check_receipts(later()) == (0, 0)

        # Redis loses B (a failover to a replica that never had it); the management server reads past it, applies
        # C and the status (no id to confirm for that one, only how far it read).
        await client.xdel(EVENTS_STREAM, ids[b.event_id])
        await management([c, status], ids[status.event_id])
        assert await events.check_receipts(later()) == (1, 1)
        again = await on_stream(client)
        assert list(again)[-1] == b.event_id
        assert entry_key(again[b.event_id]) > entry_key(ids[status.event_id])

        # D: the management server has not reached it. It waits, however often it is looked at.
        d = stopped(4)
        assert await events.publish(d)
        for _ in range(3):
            assert await events.check_receipts(later()) == (0, 0)
        assert receipts.count() == 2  # B (its copy not confirmed yet) and D

        # Kept on disk: a gateway started again has them still.
        receipts.close()
        receipts = AwaitingReceipts(path, receipts_stream(GATEWAY), within=1.0)
        events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", receipts=receipts)
        assert receipts.count() == 2
        latest = await on_stream(client)
        await management([b, d], latest[d.event_id])
        assert await events.check_receipts(later()) == (2, 0)
        assert receipts.count() == 0
    finally:
        receipts.close()
        await client.aclose()


async def test_an_event_never_confirmed_is_given_up_after_the_events_stream_would_have_dropped_it(
    redis_url: str, tmp_path: Path
) -> None:
    client = create_redis(redis_url)
    stream = receipts_stream(GATEWAY + "-old")
    receipts = AwaitingReceipts(tmp_path / "receipts.sqlite", stream, within=1.0, keep_for=60)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", receipts=receipts)
    try:
        lost = BotStopped(source=f"gateway:{GATEWAY}-old", data=BotStoppedData(bot_id=uuid.uuid4(), generation=1))
        assert await events.publish(lost)
        entry = (await on_stream(client))[lost.event_id]
        await client.xdel(EVENTS_STREAM, entry)
        await receipt_sender(client)([stopped(9).model_copy(update={"source": lost.source})], entry + "1")
        assert await events.check_receipts(later()) == (0, 0)  # read past, lost, and too old to matter: given up
        assert receipts.count() == 0
        assert lost.event_id not in await on_stream(client)
    finally:
        receipts.close()
        await client.aclose()


async def test_an_event_the_management_server_reads_past_again_and_again_is_given_up(
    redis_url: str, tmp_path: Path
) -> None:
    """One the management server refuses (it dead-letters it: it never confirms it, and reads past each copy):
    published again MAX_RESENDS times, then given up, not copied into the dead letters for hours."""
    client = create_redis(redis_url)
    source = f"gateway:{GATEWAY}-poison"
    receipts = AwaitingReceipts(tmp_path / "receipts.sqlite", receipts_stream(GATEWAY + "-poison"), within=1.0)
    events = EventPublisher(Publisher(client), tmp_path / "outbox.jsonl", receipts=receipts)
    management = receipt_sender(client)
    try:
        poison = BotStopped(source=source, data=BotStoppedData(bot_id=uuid.uuid4(), generation=1))
        assert await events.publish(poison)
        copies = 0
        while receipts.count():
            newest = (await on_stream(client))[poison.event_id]
            other = BotStopped(source=source, data=BotStoppedData(bot_id=uuid.uuid4(), generation=1))
            await management([other], newest + "9")  # another event applied, this one read past, not confirmed
            _, again = await events.check_receipts(later())
            copies += again
            assert copies <= MAX_RESENDS
        assert copies == MAX_RESENDS
    finally:
        receipts.close()
        await client.aclose()
