"""Batch signatures: one Ed25519 signature per batch, a Merkle path per entry; nothing moves between entries."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.bus.signing import (
    EVENT_DOMAIN,
    PATH_FIELD,
    CommandRefused,
    EntrySigner,
    VerifiedRoots,
    replay_key,
    signing_message,
    verify,
)

HOUR_MS = 3_600_000


def entries(count: int) -> list[tuple[str, str]]:
    return [(f"freqfleet:commands:gw-{i % 3}", f'{{"event_id": "{i}", "type": "STOP_BOT"}}') for i in range(count)]


def as_fields(signed: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in signed.items()}


class CountingKey:
    """The public key, counting its Ed25519 verifications."""

    def __init__(self, public: Ed25519PublicKey) -> None:
        self.public = public
        self.calls = 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.calls += 1
        self.public.verify(signature, data)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 200])
def test_every_entry_of_a_batch_verifies_with_one_verification(count: int) -> None:
    key = Ed25519PrivateKey.generate()
    signer = EntrySigner(key, "k1")
    batch = entries(count)
    signed = signer.batch(batch)
    assert len({s["sig"] for s in signed}) == 1
    public = CountingKey(key.public_key())
    verified = VerifiedRoots()
    for (stream, envelope), fields in zip(batch, signed, strict=True):
        verify(public, stream, as_fields(fields), envelope, max_age_ms=HOUR_MS, verified=verified)  # type: ignore[arg-type]
    assert public.calls == 1
    assert len({replay_key(as_fields(f)) for f in signed}) == count  # each entry its own replay mark


def test_an_entry_cannot_take_another_ones_place_or_path() -> None:
    key = Ed25519PrivateKey.generate()
    batch = entries(5)
    signed = EntrySigner(key, "k1").batch(batch)
    public = key.public_key()
    stream, envelope = batch[1]
    for fields, body, on in (
        (signed[2], envelope, stream),  # another entry's path
        (signed[1], envelope.replace("STOP", "START"), stream),  # a changed envelope
        (signed[1], envelope, "freqfleet:commands:gw-other"),  # another gateway's stream
        (signed[1] | {PATH_FIELD: signed[1][PATH_FIELD].replace(".5.", ".2.", 1)}, envelope, stream),  # count
        (signed[1] | {PATH_FIELD: "1.5." + base64.b64encode(b"x" * 32).decode()}, envelope, stream),  # sibling
        (signed[1] | {PATH_FIELD: "9.5."}, envelope, stream),  # index past the end
        (signed[1] | {PATH_FIELD: "1.5.@@"}, envelope, stream),  # not Base64
    ):
        with pytest.raises(CommandRefused, match="does not match it"):
            verify(public, on, as_fields(fields), body, max_age_ms=HOUR_MS, verified=VerifiedRoots())
    # A known-good batch root does not make a forged entry good: the root is recomputed from the entry.
    cache = VerifiedRoots()
    verify(public, stream, as_fields(signed[1]), envelope, max_age_ms=HOUR_MS, verified=cache)
    with pytest.raises(CommandRefused, match="does not match it"):
        verify(public, stream, as_fields(signed[1]), envelope + " ", max_age_ms=HOUR_MS, verified=cache)
    # Another key, another domain: refused.
    other = EntrySigner(Ed25519PrivateKey.generate(), "k1").batch(batch)[1]
    with pytest.raises(CommandRefused, match="does not match it"):
        verify(public, stream, as_fields(other), envelope, max_age_ms=HOUR_MS)
    with pytest.raises(CommandRefused, match="does not match it"):
        verify(public, stream, as_fields(signed[1]), envelope, max_age_ms=HOUR_MS, domain=EVENT_DOMAIN)


def test_age_is_checked_and_the_single_entry_format_still_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    stream, envelope = entries(1)[0]
    old = EntrySigner(key, "k1").fields(stream, envelope, now_ms=int(time.time() * 1000) - 2 * HOUR_MS)
    with pytest.raises(CommandRefused, match="too old to act on"):
        verify(key.public_key(), stream, as_fields(old), envelope, max_age_ms=HOUR_MS)
    at = int(time.time() * 1000)
    first_format = {
        "sig": base64.b64encode(key.sign(signing_message(stream, at, envelope))).decode(),
        "sig_kid": "k1",
        "sig_at": str(at),
    }
    verify(key.public_key(), stream, as_fields(first_format), envelope, max_age_ms=HOUR_MS)
    with pytest.raises(CommandRefused, match="not signed by the management server"):
        verify(key.public_key(), stream, {}, envelope, max_age_ms=HOUR_MS)
    with pytest.raises(CommandRefused, match="not signed by a gateway"):
        verify(key.public_key(), stream, {}, envelope, max_age_ms=HOUR_MS, domain=EVENT_DOMAIN)
