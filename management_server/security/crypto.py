"""Encryption at rest: AES-256-GCM under master keys that can rotate.

Master keys come from ``FREQFLEET_MASTER_KEYS`` (``kid:base64key`` pairs, comma-separated,
the last one encrypts) or from ``<data dir>/master.keys``, generated on first use (mode
0600) for the embedded default. Every ciphertext records the id of the key that made it,
so old rows still decrypt after a new key is added; the associated data binds a
ciphertext to its row (a blob copied to another row does not decrypt).
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class DecryptionError(Exception):
    pass


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce + ciphertext + tag


class MasterKeys:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one master key is needed")
        for kid, key in keys:
            if len(key) != 32:
                raise ValueError(f"master key {kid!r} must be 32 bytes (256 bits), got {len(key)}")
        self.keys = dict(keys)
        self.active_id = keys[-1][0]

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            kid, sep, value = item.partition(":")
            if not sep or not kid:
                raise ValueError("FREQFLEET_MASTER_KEYS takes kid:base64key pairs, comma-separated")
            pairs.append((kid, base64.b64decode(value)))
        return cls(pairs)

    @classmethod
    def from_file(cls, path: Path) -> MasterKeys:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        return cls.parse(",".join(path.read_text().split()))

    def seal(self, plaintext: bytes, associated: bytes) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = nonce + AESGCM(self.keys[self.active_id]).encrypt(nonce, plaintext, associated)
        return Sealed(self.active_id, blob)

    def open(self, sealed: Sealed, associated: bytes) -> bytes:
        key = self.keys.get(sealed.key_id)
        if key is None:
            raise DecryptionError(f"master key {sealed.key_id!r} is not configured")
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, associated)
        except InvalidTag:
            raise DecryptionError("ciphertext does not match its key or its row") from None
