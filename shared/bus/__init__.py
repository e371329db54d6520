"""The event bus over Redis Streams: envelopes, publisher, consumer, dedupe, generations."""

from shared.bus.consumer import ConsumerConfig, ConsumerStats, Delivery, Handler, StreamConsumer
from shared.bus.dedupe import Deduplicator, RedisDeduplicator
from shared.bus.generations import GenerationTracker, skip_stale
from shared.bus.messages import Envelope, UndecodableMessage, decode, encode
from shared.bus.publisher import Publisher

__all__ = [
    "ConsumerConfig",
    "ConsumerStats",
    "Deduplicator",
    "Delivery",
    "Envelope",
    "GenerationTracker",
    "Handler",
    "Publisher",
    "RedisDeduplicator",
    "StreamConsumer",
    "UndecodableMessage",
    "decode",
    "encode",
    "skip_stale",
]
