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

    async def __call__(self, entry_id: str, fields: dict[bytes, bytes]) -> str | None:
        try:
            await self._check(entry_id, fields)
        except CommandRefused as refused:
            COMMANDS_REFUSED.labels(reason=refused.kind).inc()
            return refused.reason
        return None

    async def _check(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        signature, kid, _ = signature_of(fields)
        envelope = fields.get(ENVELOPE_FIELD.encode())
        if envelope is None:
            raise CommandRefused("bad", "the entry has no envelope")
        public = await self.keys.key(kid)  # raises when no key can be had at all: the entry waits
        if public is None:
            raise CommandRefused(
                "unknown_key", f"the command is signed by key {kid[:16]}, which the management server does not publish"
            )
        verify(public, self.stream, fields, envelope.decode(errors="replace"), max_age_ms=self.max_age_ms)
        seen_key = f"freqfleet:command-signatures:{self.gateway_id}:{hashlib.sha256(signature.encode()).hexdigest()}"
        first = await self.redis.set(seen_key, entry_id, nx=True, ex=self.max_age_ms // 1000 + 120)
        if not first:
            seen = await self.redis.get(seen_key)
            seen_id = seen.decode() if isinstance(seen, bytes) else str(seen)
            if seen_id != entry_id:
                raise CommandRefused(
                    "replayed", f"the command is a copy of entry {seen_id}, already received: a replay"
                )
