"""The management server's Ed25519 signing keys.

Keys come from ``FREQFLEET_JWT_PRIVATE_KEYS`` (PEM blocks) or from ``<data dir>/keys``,
where the first start generates one (file mode 0600). The newest key signs; every key
is published at ``/.well-known/jwks.json`` so tokens signed before a rotation still
verify. ``freqfleet rotate-keys`` adds a key; removing an old key file (after the longest
token lifetime has passed) retires it. A key's ``kid`` is its RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from shared.auth.keyset import endorse

PEM_BLOCK = re.compile(r"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", re.S)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def jwk(self) -> dict[str, str]:
        x = _b64url(self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> SigningKey:
        x = _b64url(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        thumbprint = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
        return cls(kid=_b64url(hashlib.sha256(thumbprint.encode()).digest()), private=private)


def _load_pem(pem: bytes) -> SigningKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("signing keys must be Ed25519 private keys (PKCS#8 PEM)")
    return SigningKey.of(key)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyRing:
    """Signing keys, oldest first; the last one signs."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.keys = keys

    @property
    def active(self) -> SigningKey:
        return self.keys[-1]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.kid: k.public for k in self.keys}

    def jwks(self) -> dict[str, Any]:
        """The public keys, endorsed by each of them (a gateway that pinned one takes a rotated set)."""
        return endorse({"keys": [k.jwk() for k in reversed(self.keys)]}, [(k.kid, k.private) for k in self.keys])

    @classmethod
    def from_pem(cls, text: str, variable: str = "FREQFLEET_JWT_PRIVATE_KEYS") -> KeyRing:
        blocks = PEM_BLOCK.findall(text)
        if not blocks:
            raise ValueError(f"{variable} holds no PEM private key")
        return cls([_load_pem(b.encode()) for b in blocks])

    @classmethod
    def configured(cls, pem: SecretStr | None, directory: Path, variable: str) -> KeyRing:
        """The keys of the setting ``variable`` (PEM blocks) when it is set, else those of ``directory``, where
        the first call generates one (mode 0600)."""
        if pem is None:
            return cls.from_directory(directory)
        return cls.from_pem(pem.get_secret_value(), variable)

    @classmethod
    def from_directory(cls, directory: Path, create: bool = True) -> KeyRing:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = sorted(directory.glob("*.pem"))
        if not files and create:
            files = [add_key(directory)]
        return cls([_load_pem(f.read_bytes()) for f in files])


def add_key(directory: Path) -> Path:
    """Generate a new key into ``directory``; it sorts last, so it signs from the next start on."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.of(Ed25519PrivateKey.generate())
    path = directory / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{key.kid[:12]}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(_pem(key.private))
    return path
