"""The gateway acts only on commands the management server signed (see :mod:`shared.bus.signing`).

:class:`CommandSignatures` is the command consumer's admission check: before an entry of this gateway's stream
is decoded, its signature is checked with the management server's command keys (fetched from
``/.well-known/command-keys.json`` beside the token keys, kept on disk like them, refetched when an entry names
a key not known yet). A refused entry is dead-lettered with the reason and counted in
``freqfleet_commands_refused_total{reason}``; the bot is not touched.

A replay — a signed entry copied to the stream again under a new entry id — is recognised by its signature:
each signature is remembered in Redis (with the entry id it came with) for as long as it is fresh enough to
act on. The same entry delivered again (a restart, a reclaim) keeps its entry id and is not a replay.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import redis.asyncio as aioredis

from shared.auth.verifier import PublicKey
from shared.bus.publisher import ENVELOPE_FIELD
from shared.bus.signing import CommandRefused, signature_of, verify
from shared.bus.streams import commands_stream
from shared.logging import get_logger
from shared.metrics import COMMANDS_REFUSED

log = get_logger(__name__)

COMMAND_KEYS_PATH = "/.well-known/command-keys.json"
COMMAND_KEYS_CACHE = "command-keys.json"


class KeyLookup(Protocol):
    """Where the command keys come from (a :class:`~trading_gateway.fleet.deps.CachedJwksKeySource`)."""

    async def key(self, kid: str) -> PublicKey | None: ...


class CommandSignatures:
    def __init__(self, keys: KeyLookup, redis: aioredis.Redis, gateway_id: str, max_age: float) -> None:
        self.keys = keys
        self.redis = redis
        self.gateway_id = gateway_id
        self.stream = commands_stream(gateway_id)
        self.max_age_ms = int(max_age * 1000)

    async def __call__(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> list[str | None]:
        """Per entry, why it is refused (None: it may be acted on). One Redis round trip for the whole batch."""
        verdicts: list[str | None] = []
        marks: list[tuple[int, str, str]] = []  # (index, replay key, entry id) of the entries verified
        for i, (entry_id, fields) in enumerate(entries):
            try:
                marks.append((i, await self._verify(fields), entry_id))
                verdicts.append(None)
            except CommandRefused as refused:
                verdicts.append(_refuse(refused))
        if marks:
            pipe = self.redis.pipeline(transaction=False)
            for _, key, entry_id in marks:
                pipe.set(key, entry_id, nx=True, ex=self.max_age_ms // 1000 + 120, get=True)
            previous = await pipe.execute()
            for (i, _, entry_id), seen in zip(marks, previous, strict=True):
                seen_id = seen.decode() if isinstance(seen, bytes) else seen
                if seen_id is not None and seen_id != entry_id:
                    verdicts[i] = _refuse(
                        CommandRefused("replayed", f"the command is a copy of entry {seen_id}: a replay")
                    )
        return verdicts

    async def _verify(self, fields: dict[bytes, bytes]) -> str:
        """Check the entry's signature; the key that remembers it (to recognise a replay)."""
        signature, kid, _ = signature_of(fields)
        envelope = fields.get(ENVELOPE_FIELD.encode())
        if envelope is None:
            raise CommandRefused("bad", "the entry has no envelope")
        public = await self.keys.key(kid)  # raises when no key can be had at all: the batch waits
        if public is None:
            raise CommandRefused(
                "unknown_key", f"the command is signed by key {kid[:16]}, which the management server does not publish"
            )
        verify(public, self.stream, fields, envelope.decode(errors="replace"), max_age_ms=self.max_age_ms)
        return f"freqfleet:command-signatures:{self.gateway_id}:{hashlib.sha256(signature.encode()).hexdigest()}"


def _refuse(refused: CommandRefused) -> str:
    COMMANDS_REFUSED.labels(reason=refused.kind).inc()
    return refused.reason
