"""The gateway acts only on commands the management server signed (see :mod:`shared.bus.signing`).

:class:`CommandSignatures` is the command consumer's admission check: before an entry of this gateway's stream
is decoded, its signature is checked with the management server's command keys (fetched from
``/.well-known/command-keys.json`` beside the token keys, kept on disk like them, refetched when an entry names
a key not known yet). A refused entry is dead-lettered with the reason and counted in
``freqfleet_commands_refused_total{reason}``; the bot is not touched.

A replay — a signed entry copied to the stream again under a new entry id — is recognised by its signature and
its place in the signed batch: the consumer remembers each (with the entry id it came with) for as long as it is
fresh enough to act on, in memory (one gateway process consumes its stream; a Redis write per command cost a
fifth of the bus's throughput). The same entry delivered again (a reclaim) keeps its entry id and is not a
replay. A copy met only after a restart carries the command id of one already handled: the consumer's dedupe
acks it without acting (it is not dead-lettered as a replay then), and its generation is old besides.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from shared.auth.verifier import PublicKey
from shared.bus.publisher import ENVELOPE_FIELD
from shared.bus.signing import FUTURE_SKEW_MS, CommandRefused, VerifiedRoots, replay_key, signature_of, verify
from shared.bus.streams import commands_stream
from shared.logging import get_logger
from shared.metrics import COMMANDS_REFUSED

log = get_logger(__name__)

COMMAND_KEYS_PATH = "/.well-known/command-keys.json"
COMMAND_KEYS_CACHE = "command-keys.json"


class KeyLookup(Protocol):
    """Where the command keys come from (a :class:`~trading_gateway.auth.CachedJwksKeySource`)."""

    async def key(self, kid: str) -> PublicKey | None: ...


class CommandSignatures:
    def __init__(self, keys: KeyLookup, gateway_id: str, max_age: float, remember: int = 1_000_000) -> None:
        self.keys = keys
        self.gateway_id = gateway_id
        self.remember = remember  # at most this many signed entries remembered (the oldest are forgotten first)
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # replay key -> (entry id, forget at)
        self.stream = commands_stream(gateway_id)
        self.max_age_ms = int(max_age * 1000)
        self.verified = VerifiedRoots()  # the relay signs a batch once: one Ed25519 verification per batch

    async def __call__(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> list[str | None]:
        """Per entry, why it is refused (None: it may be acted on)."""
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values()))[1] < now:  # older than any command still valid
            self._seen.popitem(last=False)
        verdicts: list[str | None] = []
        for entry_id, fields in entries:
            try:
                key = await self._verify(fields)
            except CommandRefused as refused:
                verdicts.append(_refuse(refused))
                continue
            seen = self._seen.get(key)
            if seen is not None and seen[0] != entry_id:
                verdicts.append(
                    _refuse(CommandRefused("replayed", f"the command is a copy of entry {seen[0]}: a replay"))
                )
                continue
            if seen is None:
                self._seen[key] = (entry_id, now + self.max_age_ms / 1000 + FUTURE_SKEW_MS / 1000)
                if len(self._seen) > self.remember:
                    self._seen.popitem(last=False)
            verdicts.append(None)
        return verdicts

    async def _verify(self, fields: dict[bytes, bytes]) -> str:
        """Check the entry's signature; the key that remembers it (to recognise a replay)."""
        _, kid, _ = signature_of(fields)
        envelope = fields.get(ENVELOPE_FIELD.encode())
        if envelope is None:
            raise CommandRefused("bad", "the entry has no envelope")
        public = await self.keys.key(kid)  # raises when no key can be had at all: the batch waits
        if public is None:
            raise CommandRefused(
                "unknown_key", f"the command is signed by key {kid[:16]}, which the management server does not publish"
            )
        verify(
            public,
            self.stream,
            fields,
            envelope.decode(errors="replace"),
            max_age_ms=self.max_age_ms,
            verified=self.verified,
        )
        return replay_key(fields)


def _refuse(refused: CommandRefused) -> str:
    COMMANDS_REFUSED.labels(reason=refused.kind).inc()
    return refused.reason
