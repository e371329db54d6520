"""Signed commands: only the management server can make a gateway act.

Whoever can write to Redis could otherwise put a ``START_BOT`` with any strategy on any gateway's stream. So
the management server signs every command entry as it publishes it (Ed25519, a command-signing key of its own,
published at ``/.well-known/command-keys.json``), and a gateway acts only on entries whose signature checks out.

The signature covers ``freqfleet-command/1``, the stream (so the target gateway), the signing time in
milliseconds, and the sha256 of the envelope's JSON, which holds the type, the command id (``event_id``), the
bot id, the generation and the whole payload (strategy source, model bundle and its own signature). It travels
in three fields of the stream entry beside ``envelope``: ``sig`` (Base64), ``sig_kid`` and ``sig_at``.

A gateway refuses (and dead-letters, with the reason) an entry whose signature is missing, made by an unknown
key, wrong, older than its bound (``FREQFLEET_COMMAND_MAX_AGE``) or from the future, or a copy of an entry it
has seen already under another entry id (a replay). The bound is the longest a command may wait in a stream for
a gateway that is down: the management server reconciles what it wants again later.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FIELD = "sig"
KEY_FIELD = "sig_kid"
SIGNED_AT_FIELD = "sig_at"
DOMAIN = "freqfleet-command/1"
FUTURE_SKEW_MS = 60_000  # clocks of two hosts may disagree this much


class CommandRefused(Exception):
    """An entry that must not be acted on; ``reason`` says why (missing, unknown key, bad, stale, replayed)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def signing_message(stream: str, signed_at_ms: int, envelope_json: str) -> bytes:
    digest = hashlib.sha256(envelope_json.encode()).hexdigest()
    return f"{DOMAIN}\n{stream}\n{signed_at_ms}\n{digest}".encode()


@dataclass(frozen=True)
class CommandSigner:
    """The management server's side: the newest command-signing key and its ``kid``."""

    private: Ed25519PrivateKey
    kid: str

    def fields(self, stream: str, envelope_json: str, now_ms: int | None = None) -> dict[str, str]:
        signed_at = int(time.time() * 1000) if now_ms is None else now_ms
        signature = self.private.sign(signing_message(stream, signed_at, envelope_json))
        return {
            SIGNATURE_FIELD: base64.b64encode(signature).decode(),
            KEY_FIELD: self.kid,
            SIGNED_AT_FIELD: str(signed_at),
        }


def _text(fields: Mapping[bytes, bytes], name: str) -> str | None:
    value = fields.get(name.encode())
    return None if value is None else value.decode(errors="replace")


def signature_of(fields: Mapping[bytes, bytes]) -> tuple[str, str, int]:
    """The entry's (signature, kid, signed-at ms).

    :raises CommandRefused: a field is missing or malformed.
    """
    signature, kid, signed_at = (_text(fields, f) for f in (SIGNATURE_FIELD, KEY_FIELD, SIGNED_AT_FIELD))
    if not signature or not kid or not signed_at:
        raise CommandRefused("missing", "the command is not signed by the management server")
    if not signed_at.isdigit() or len(signed_at) > 15:
        raise CommandRefused("bad", f"the command's signing time {signed_at[:20]!r} is not a time")
    return signature, kid, int(signed_at)


def verify(
    public: Ed25519PublicKey,
    stream: str,
    fields: Mapping[bytes, bytes],
    envelope_json: str,
    *,
    max_age_ms: int,
    now_ms: int | None = None,
) -> None:
    """Check one entry's signature with the key its ``sig_kid`` names.

    :raises CommandRefused: bad signature, too old, from the future.
    """
    signature, kid, signed_at = signature_of(fields)
    try:
        raw = base64.b64decode(signature, validate=True)
        public.verify(raw, signing_message(stream, signed_at, envelope_json))
    except (InvalidSignature, ValueError):
        raise CommandRefused(
            "bad", f"the command's signature (key {kid[:16]}) does not match it: changed, or signed for another gateway"
        ) from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if signed_at > now + FUTURE_SKEW_MS:
        raise CommandRefused("stale", "the command was signed in the future: check the hosts' clocks")
    if now - signed_at > max_age_ms:
        raise CommandRefused(
            "stale",
            f"the command was signed {(now - signed_at) / 1000:.0f} s ago, more than {max_age_ms / 1000:.0f} s "
            "(FREQFLEET_COMMAND_MAX_AGE): too old to act on",
        )
