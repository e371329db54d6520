"""Publishing envelopes on a stream.

Every ``XADD`` trims its stream as ``Retention`` says: by age on the command and events streams (a command older
than the bound gateways accept is refused anyway; an event is kept ``FREQFLEET_EVENTS_MAX_AGE`` while nobody
consumes it), by count on dead-letter streams.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from asgi_correlation_id import correlation_id

from shared.bus.messages import Envelope, encode
from shared.bus.signing import EntrySigner
from shared.bus.streams import Retention

ENVELOPE_FIELD = "envelope"


def entry_fields(message: Envelope) -> dict[str, str]:
    """A stream entry: the envelope as JSON, plus type and id for people reading with XRANGE."""
    return raw_entry_fields(message.type, str(message.event_id), encode(message))


def raw_entry_fields(message_type: str, event_id: str, envelope_json: str) -> dict[str, str]:
    return {"type": message_type, "event_id": event_id, ENVELOPE_FIELD: envelope_json}


def with_request_correlation(message: Envelope) -> Envelope:
    """The message with the current request's correlation id, unless it has one."""
    if message.correlation_id is None and (cid := correlation_id.get()):
        return message.model_copy(update={"correlation_id": cid})
    return message


class Publisher:
    """XADD with approximate trimming; entries signed when a signer is given (a gateway's events)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        signer: EntrySigner | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.redis = redis
        self.signer = signer
        self.retention = retention or Retention()

    async def publish(self, stream: str, message: Envelope) -> str:
        """Append the message; returns the entry id. The same message twice gives two entries
        with one ``event_id``, which consumers recognise as a duplicate."""
        return await self.publish_raw(stream, entry_fields(with_request_correlation(message)))

    async def publish_raw_many(self, stream: str, entries: list[dict[str, str]]) -> list[str]:
        """Append ``entries`` in order, in one round trip (a pipeline, not a transaction), signed under one
        signature when there is a signer; their entry ids."""
        if not entries:
            return []
        if self.signer is not None:
            signatures = self.signer.batch([(stream, fields[ENVELOPE_FIELD]) for fields in entries])
            entries = [fields | signature for fields, signature in zip(entries, signatures, strict=True)]
        trim = self.retention.trim(stream, time.time())
        pipe = self.redis.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(stream, fields, **trim)  # type: ignore[arg-type]
        found = await pipe.execute()
        return [entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id) for entry_id in found]

    async def publish_raw(self, stream: str, fields: dict[str, str]) -> str:
        if self.signer is not None:
            fields = fields | self.signer.fields(stream, fields[ENVELOPE_FIELD])
        trim = self.retention.trim(stream, time.time())
        entry_id = await self.redis.xadd(stream, fields, **trim)  # type: ignore[arg-type]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
