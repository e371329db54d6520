"""Key sets a gateway can trust without TLS: pinned at first contact, changed only with a pinned key's word.

The management server publishes three key sets (token keys ``/.well-known/jwks.json``, command keys, model
keys), in JWKS form. Every key of a set also signs the set (``freqfleet_endorsements``: kid and Ed25519
signature over ``freqfleet-keyset/1`` and the sorted ``kid x`` lines). A gateway keeps the first set it gets (on
disk, beside its identity) and afterwards takes a different set only when a key it already trusts endorses it:
a rotation (new key added while the old one still signs) passes, a set served by someone in the middle of plain
HTTP does not. Trust on first use, as SSH does; a gateway that must not trust its first contact gets the files
copied into its data dir before it starts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ENDORSEMENTS = "freqfleet_endorsements"
DOMAIN = "freqfleet-keyset/1"


def _entries(jwks: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = jwks.get("keys", [])
    return sorted(
        (str(e["kid"]), str(e["x"]))
        for e in keys
        if isinstance(e, dict) and e.get("kty") == "OKP" and e.get("crv") == "Ed25519" and e.get("kid") and e.get("x")
    )


def keyset_message(jwks: Mapping[str, Any]) -> bytes:
    return "\n".join([DOMAIN, *(f"{kid} {x}" for kid, x in _entries(jwks))]).encode()


def endorse(jwks: dict[str, Any], signers: Iterable[tuple[str, Ed25519PrivateKey]]) -> dict[str, Any]:
    """``jwks`` with every signer's endorsement of it."""
    message = keyset_message(jwks)
    return jwks | {
        ENDORSEMENTS: [{"kid": kid, "sig": base64.b64encode(key.sign(message)).decode()} for kid, key in signers]
    }


def raw(key: Any) -> bytes:
    """The 32 bytes of an Ed25519 public key."""
    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def endorsed_by(jwks: Mapping[str, Any], trusted: Mapping[str, Any]) -> str | None:
    """The kid of a ``trusted`` key that endorses ``jwks`` (None: no trusted key vouches for it)."""
    message = keyset_message(jwks)
    endorsements = jwks.get(ENDORSEMENTS, [])
    for entry in endorsements if isinstance(endorsements, list) else []:
        if not isinstance(entry, dict):
            continue
        key = trusted.get(str(entry.get("kid")))
        if not isinstance(key, Ed25519PublicKey):
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("sig")), validate=True), message)
        except (InvalidSignature, ValueError):
            continue
        return str(entry["kid"])
    return None
