"""The bus end to end: publish -> handle -> ack, beside a bare redis-py loop on the same server.

Both sides run in this process against one real Valkey (append-only file on, as under
``freqfleet up``): a producer task appends at a fixed rate (1,000 messages/s) or as fast as
it can, a consumer task reads with XREADGROUP, "handles" and acks. Latency is from the
producer's timestamp to the moment the handler runs; throughput is messages acked per second
over the whole run. The baseline is the bare XADD / XREADGROUP (COUNT, BLOCK) / XACK loop;
ours is ``Publisher`` + ``StreamConsumer`` with envelope encoding and validation, the
Redis deduplicator, the claim keep-alive and the log context.

    python -m bench.run bus           (or: python -m bench.bus)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._common import free_port
from freqfleet.embedded import EmbeddedValkey
from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.dedupe import Deduplicator, RedisDeduplicator
from shared.bus.messages import CommandAccepted, CommandAcceptedData, StopBot, StopBotData, encode
from shared.bus.publisher import ENVELOPE_FIELD, Publisher, entry_fields
from shared.bus.signing import EVENT_DOMAIN, CommandSigner, EntrySigner
from shared.bus.streams import commands_stream
from shared.logging import configure_logging
from shared.redis import create_redis
from shared.settings import LogFormat
from trading_gateway.bus.applied import AppliedCommands
from trading_gateway.bus.events import EventPublisher
from trading_gateway.bus.signatures import CommandSignatures


@dataclass
class Figures:
    name: str
    rate: str
    count: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.count / self.seconds

    def pct(self, p: float) -> float:
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def _produce(count: int, rate: float | None, send: Callable[[range], Awaitable[None]], group: int = 1) -> None:
    """Send ``count`` messages, ``group`` at a time (paced: one at a time, at ``rate``)."""
    start = time.perf_counter()
    for i in range(0, count, group):
        if rate is not None:
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
        await send(range(i, min(i + group, count)))


async def bare(url: str, count: int, rate: float | None) -> Figures:
    redis = create_redis(url)
    stream, group = f"bench:bare:{uuid.uuid4().hex[:6]}", "g"
    await redis.xgroup_create(stream, group, id="$", mkstream=True)
    latencies: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        reader = aioredis.Redis.from_url(url)
        while len(latencies) < count:
            response: Any = await reader.xreadgroup(group, "c", {stream: ">"}, count=32, block=1000)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    latencies.append((time.perf_counter() - float(fields[b"t"])) * 1000)
                    await reader.xack(stream, group, entry_id)
        await reader.aclose()
        done.set()

    async def send(indices: range) -> None:
        for i in indices:
            await redis.xadd(stream, {"t": repr(time.perf_counter()), "n": i}, maxlen=100_000, approximate=True)

    consumer = asyncio.create_task(consume())
    started = time.perf_counter()
    await _produce(count, rate, send)
    await done.wait()
    elapsed = time.perf_counter() - started
    await consumer
    await redis.aclose()
    return Figures("bare redis-py", "1,000/s" if rate else "full speed", count, elapsed, latencies)


@dataclass
class _StaticKeys:
    keys: dict[str, Any]

    async def key(self, kid: str) -> Any:
        return self.keys.get(kid)


async def ours(url: str, count: int, rate: float | None, *, signed: bool = False, acked: bool = False) -> Figures:
    """``Publisher`` + ``StreamConsumer``; ``signed``: entries signed as the outbox relay signs commands and verified
    as a gateway verifies them (signature, age, replay mark in Redis) before they are decoded. The relay signs what
    one pass publishes under one signature: at full speed the bench signs 64 at a time (a pass takes up to 200),
    at the paced rate each message alone (the relay wakes on every commit). ``acked`` (signed too): what acks end to
    end cost the gateway, as its command handler does it: the applied record on its disk (``bus/applied.py``, the
    consumer's deduplicator, so the batch's acks go out together after it) and, per command, an answer kept with that
    record and queued on the gateway's event publisher, which sends a batch's answers after the batch, signed under
    one signature, in one round trip."""
    signed = signed or acked
    redis = create_redis(url)
    gateway = f"bench-{uuid.uuid4().hex[:6]}"
    stream, group = (commands_stream(gateway) if signed else f"bench:ours:{gateway}"), "g"
    publisher = Publisher(redis)
    private = Ed25519PrivateKey.generate()
    signer = CommandSigner(private, "bench")
    admit = CommandSignatures(_StaticKeys({"bench": private.public_key()}), gateway, 3600) if signed else None
    sent: dict[uuid.UUID, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    scratch = tempfile.TemporaryDirectory(prefix="bench-bus-applied-")
    applied = AppliedCommands(Path(scratch.name) / "applied.sqlite") if acked else None
    event_signer = EntrySigner(Ed25519PrivateKey.generate(), gateway, EVENT_DOMAIN)
    events = EventPublisher(Publisher(redis, signer=event_signer), Path(scratch.name) / "outbox.jsonl")

    async def handler(delivery: Delivery) -> None:
        message = delivery.message
        latencies.append((time.perf_counter() - sent[message.event_id]) * 1000)
        if applied is not None:  # the answer, as CommandHandler._answer gives it
            answer = CommandAccepted(
                source=f"gateway:{gateway}",
                data=CommandAcceptedData(command_id=message.event_id, command_type=message.type, bot_id=bot),
            )
            events.publish_later(answer)
            await applied.remember(message.event_id, encode(answer))
        if len(latencies) == count:
            done.set()

    async def answers_out(_messages: list[Any], _through: str) -> None:
        await events.flush_later()  # CommandHandler.after_batch

    dedupe: Deduplicator = RedisDeduplicator(redis, group) if applied is None else applied
    consumer = StreamConsumer(
        url,
        ConsumerConfig(stream, group, "c", group_start_id="$", ack_per_batch=acked),
        handler,
        dedupe,
        admit,
        after_batch=answers_out if acked else None,
    )
    await consumer.redis.xgroup_create(stream, group, id="$", mkstream=True)
    consumer.start()
    bot = uuid.uuid4()

    async def send(indices: range) -> None:
        messages = [StopBot(source="management", data=StopBotData(bot_id=bot, generation=i)) for i in indices]
        for message in messages:
            sent[message.event_id] = time.perf_counter()
        if signed:
            entries = [entry_fields(m) for m in messages]
            signatures = signer.batch([(stream, fields[ENVELOPE_FIELD]) for fields in entries])
            for fields, signature in zip(entries, signatures, strict=True):
                await publisher.publish_raw(stream, fields | signature)
        else:
            for message in messages:
                await publisher.publish(stream, message)

    started = time.perf_counter()
    await _produce(count, rate, send, group=64 if signed and rate is None else 1)
    await done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await events.flush_later()
    if acked and events.published != count:
        raise RuntimeError(f"{events.published} answers published for {count} commands")
    await redis.aclose()
    if applied is not None:
        applied.close()
    scratch.cleanup()
    name = "ours, acked" if acked else "ours, signed" if signed else "ours"
    return Figures(name, "1,000/s" if rate else "full speed", count, elapsed, latencies)


async def bench(url: str, quick: bool) -> list[tuple[Figures, ...]]:
    paced = 1500 if quick else 5000
    flat = 2000 if quick else 10000
    rounds = 1 if quick else 3
    results: list[tuple[Figures, ...]] = []
    for rate, count in ((1000.0, paced), (None, flat)):
        rows = [
            (
                await bare(url, count, rate),
                await ours(url, count, rate),
                await ours(url, count, rate, signed=True),
                await ours(url, count, rate, acked=True),
            )
            for _ in range(rounds)
        ]
        # The round with the median throughput of ours, with its own baseline.
        rows.sort(key=lambda p: p[1].throughput)
        results.append(rows[len(rows) // 2])
    return results


def report(results: list[tuple[Figures, ...]]) -> str:
    lines = [
        f"  {'rate':<11} {'side':<14} {'msgs':>6} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}",
    ]
    for base, *mine in results:
        for f in (base, *mine):
            lines.append(
                f"  {f.rate:<11} {f.name:<14} {f.count:>6} {f.throughput:>8.0f} {f.pct(50):>7.2f} "
                f"{f.pct(99):>7.2f} {max(f.latencies_ms):>7.2f}"
            )
        for f in mine:
            lines.append(
                f"  {'':<11} {(f.name + ' / bare'):<14} {'':>6} {f.throughput / base.throughput:>8.2f} "
                f"{f.pct(50) / base.pct(50):>7.2f} {f.pct(99) / base.pct(99):>7.2f}"
            )
    lines.append("  producer, consumer and Valkey share this machine's 2 cores; medians of 3 rounds")
    return "\n".join(lines)


def run(quick: bool = False) -> None:
    configure_logging("bench", "WARNING", LogFormat.json)
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        valkey = EmbeddedValkey(Path(tmp), free_port())
        valkey.start()
        try:
            results = asyncio.run(bench(valkey.url, quick))
        finally:
            valkey.stop()
    print(report(results))
    print(f"  median handler latency at 1,000/s: {statistics.median(results[0][1].latencies_ms):.2f} ms")


if __name__ == "__main__":
    run()
