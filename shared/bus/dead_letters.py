"""Reading and replaying dead letters (``freqfleet bus dead-letters`` / ``freqfleet bus replay``).

A dead letter keeps the original entry's fields beside why it died. Replaying puts the
original fields back on the stream it came from (same ``event_id``: it was never applied,
so it will be now) and removes the dead letter, once the cause has been fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.bus.publisher import ENVELOPE_FIELD
from shared.bus.signing import KEY_FIELD, SIGNATURE_FIELD, SIGNED_AT_FIELD, CommandSigner
from shared.bus.streams import DEAD_LETTER_SUFFIX, Retention, is_commands_stream

ORIGINAL_FIELDS = ("type", "event_id", ENVELOPE_FIELD)
SIGNATURE_FIELDS = (SIGNATURE_FIELD, KEY_FIELD, SIGNED_AT_FIELD)


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    source_stream: str
    group: str
    original_entry_id: str
    reason: str
    deliveries: int
    dead_at: str
    message_type: str | None
    event_id: str | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _letter(entry_id: Any, fields: Any) -> DeadLetter:
    get = {_text(k): _text(v) for k, v in fields.items()}.get
    return DeadLetter(
        entry_id=_text(entry_id),
        source_stream=get("source_stream", ""),
        group=get("group", ""),
        original_entry_id=get("entry_id", ""),
        reason=get("reason", ""),
        deliveries=int(get("deliveries", "0") or 0),
        dead_at=get("dead_at", ""),
        message_type=get("type"),
        event_id=get("event_id"),
    )


async def dead_letter_streams(redis: aioredis.Redis) -> list[str]:
    streams = [_text(key) async for key in redis.scan_iter(match=f"freqfleet:*{DEAD_LETTER_SUFFIX}", _type="stream")]
    return sorted(streams)


async def list_dead_letters(redis: aioredis.Redis, stream: str, count: int = 100) -> list[DeadLetter]:
    """The oldest ``count`` dead letters of a dead-letter stream."""
    entries: Any = await redis.xrange(stream, count=count)
    return [_letter(entry_id, fields) for entry_id, fields in entries]


class DeadLetterNotFound(LookupError):
    pass


async def replay(
    redis: aioredis.Redis,
    stream: str,
    entry_id: str,
    signer: CommandSigner | None = None,
    retention: Retention | None = None,
) -> str:
    """Put a dead letter's original message back on its source stream; returns the new entry id.

    A command for a gateway is signed anew with ``signer`` (its old signature is stale, or the reason it died):
    without one it would be refused again.
    """
    entries: Any = await redis.xrange(stream, min=entry_id, max=entry_id)
    if not entries:
        raise DeadLetterNotFound(f"no dead letter {entry_id} in {stream}")
    _, fields = entries[0]
    letter = _letter(entry_id, fields)
    if not letter.source_stream:
        raise DeadLetterNotFound(f"dead letter {entry_id} does not say which stream it came from")
    # An event keeps its gateway's signature (still valid: only the management server signs anew, commands).
    keep = ORIGINAL_FIELDS if is_commands_stream(letter.source_stream) else (*ORIGINAL_FIELDS, *SIGNATURE_FIELDS)
    original = {k: v for k, v in fields.items() if _text(k) in keep}
    if signer is not None and is_commands_stream(letter.source_stream):
        envelope = _text(fields.get(ENVELOPE_FIELD.encode(), b""))
        original |= signer.fields(letter.source_stream, envelope)
    trim = (retention or Retention()).trim(letter.source_stream, time.time())
    new_id = await redis.xadd(letter.source_stream, original, **trim)
    await redis.xdel(stream, entry_id)
    return _text(new_id)
