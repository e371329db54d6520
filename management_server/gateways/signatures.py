"""The management server acts only on what enrolled gateways report.

:class:`EventSignatures` is the events consumer's admission check (see :mod:`shared.bus.signing`): every entry of
``freqfleet:events`` must be signed (domain ``freqfleet-event/1``) by the key an admin enrolled for the gateway
its ``sig_kid`` names, that gateway must not be revoked, and the envelope must say it comes from that gateway
(``source`` ``gateway:<id>``; a heartbeat's ``gateway_id`` too). Anything else — written straight into Redis,
signed by a gateway for another, or by a revoked one — is dead-lettered with the reason and counted in
``freqfleet_events_refused_total{reason}``; nothing in the database changes.

The enrolled keys are read from the database and kept for :data:`CACHE_SECONDS` (a revocation takes effect
within that); a batch naming a gateway not known is checked against a fresh read. Events are accepted up to
:data:`EVENT_MAX_AGE` after signing: a gateway signs when it publishes, and a management server that was down for
a while must still apply the backlog (a replayed event is a duplicate by its id, and every effect is idempotent).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.gateways.models import Gateway
from shared.bus.publisher import ENVELOPE_FIELD
from shared.bus.signing import EVENT_DOMAIN, KEY_FIELD, CommandRefused, VerifiedRoots, signature_of, verify
from shared.bus.streams import EVENTS_STREAM
from shared.metrics import EVENTS_REFUSED

CACHE_SECONDS = 5.0
EVENT_MAX_AGE = 7 * 24 * 3600.0


def _kid(fields: dict[bytes, bytes]) -> str | None:
    value = fields.get(KEY_FIELD.encode())
    return None if value is None else value.decode(errors="replace")


@dataclass(frozen=True)
class _Known:
    public: Ed25519PublicKey | None  # None: not enrolled, or revoked
    why: str


class EventSignatures:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self._keys: dict[str, _Known] = {}
        self._loaded_at = 0.0
        self.verified = VerifiedRoots()

    async def __call__(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> list[str | None]:
        """Per entry, why it is refused (None: it may be applied)."""
        unknown = any((kid := _kid(fields)) is not None and kid not in self._keys for _, fields in entries)
        if unknown or time.monotonic() - self._loaded_at > CACHE_SECONDS:
            # At most one read per batch (unsigned entries cause none): entries naming made-up gateways can't make
            # it read more than that.
            await self._load()
        verdicts: list[str | None] = []
        for _, fields in entries:
            try:
                await self._check(fields)
                verdicts.append(None)
            except CommandRefused as refused:
                EVENTS_REFUSED.labels(reason=refused.kind).inc()
                verdicts.append(refused.reason)
        return verdicts

    async def enrolled_key(self, gateway_id: str) -> Ed25519PublicKey | None:
        """The signing key of an enrolled, unrevoked gateway (None otherwise). The keys are read again when stale,
        or for an id not known at most once a second (a header naming made-up gateways can't flood the database)."""
        stale = time.monotonic() - self._loaded_at
        if stale > CACHE_SECONDS or (gateway_id not in self._keys and stale > 1.0):
            await self._load()
        known = self._keys.get(gateway_id)
        return None if known is None else known.public

    def forget(self) -> None:
        """Read the enrolled keys again before the next check (after an enrollment or a revocation here)."""
        self._loaded_at = 0.0

    async def _load(self) -> None:
        async with self.sessionmaker() as session:
            rows = (await session.execute(select(Gateway))).scalars().all()
        keys: dict[str, _Known] = {}
        for row in rows:
            if row.revoked_at is not None:
                keys[row.gateway_id] = _Known(None, f"gateway {row.gateway_id} was revoked")
            elif row.signing_key is None:
                keys[row.gateway_id] = _Known(None, f"gateway {row.gateway_id} is not enrolled")
            else:
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(row.signing_key))
                keys[row.gateway_id] = _Known(public, "")
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def _check(self, fields: dict[bytes, bytes]) -> None:
        _, kid, _ = signature_of(fields, EVENT_DOMAIN)
        known = self._keys.get(kid)
        if known is None:
            raise CommandRefused(
                "unknown_key",
                f"the entry is signed as gateway {kid[:64]!r}, which is not enrolled (freqfleet gateways enroll)",
            )
        if known.public is None:
            raise CommandRefused("revoked", known.why)
        raw = fields.get(ENVELOPE_FIELD.encode())
        if raw is None:
            raise CommandRefused("bad", "the entry has no envelope")
        envelope = raw.decode(errors="replace")
        verify(
            known.public,
            EVENTS_STREAM,
            fields,
            envelope,
            max_age_ms=int(EVENT_MAX_AGE * 1000),
            domain=EVENT_DOMAIN,
            verified=self.verified,
        )
        try:
            body = json.loads(envelope)
            source = body.get("source")
            data = body.get("data")
            said = data.get("gateway_id") if isinstance(data, dict) and body.get("type") == "GATEWAY_HEARTBEAT" else kid
        except (ValueError, AttributeError):
            raise CommandRefused("bad", "the envelope is not a JSON object") from None
        if source != f"gateway:{kid}" or said != kid:
            raise CommandRefused(
                "impersonation",
                f"gateway {kid} signed an entry that says it comes from {str(source)[:80]!r}: a gateway reports "
                "only for itself",
            )
