"""Sealing a secret to one gateway: only the holder of that gateway's private key opens it.

An ECIES construction from well-kept primitives of ``cryptography``: an ephemeral X25519 key agrees a secret
with the gateway's sealing key, HKDF-SHA256 derives a ChaCha20-Poly1305 key from it (salted with both public
keys), and the plaintext is encrypted with associated data that binds it to its use (for exchange credentials:
the gateway, the bot and the credential's revision). Wrong key, other associated data or any changed byte:
:class:`SealError`, never a wrong plaintext.
"""

from __future__ import annotations

import base64
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.bus.messages import ExchangeCredentials, SealedCredentials, SealedDatabase

INFO = b"freqfleet-seal/1"
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(Exception):
    """The sealed box could not be opened (another key, other associated data, or changed bytes)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SealError(f"{what} is not valid Base64") from None


def public_key(text: str) -> X25519PublicKey:
    raw = unb64(text, "the sealing key")
    if len(raw) != 32:
        raise SealError("a sealing key has 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=INFO).derive(shared)


def seal(recipient: X25519PublicKey, plaintext: bytes, associated: bytes) -> tuple[str, str, str]:
    """(ephemeral public key, nonce, ciphertext), each Base64."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(*RAW)
    recipient_raw = recipient.public_bytes(*RAW)
    key = _key(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw)
    nonce = os.urandom(12)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)
    return b64(ephemeral_raw), b64(nonce), b64(ciphertext)


def open_sealed(private: X25519PrivateKey, ephemeral: str, nonce: str, ciphertext: str, associated: bytes) -> bytes:
    """The plaintext.

    :raises SealError: not sealed to this key, other associated data, or changed.
    """
    ephemeral_raw = unb64(ephemeral, "the ephemeral key")
    if len(ephemeral_raw) != 32:
        raise SealError("the ephemeral key has not 32 bytes")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        key = _key(shared, ephemeral_raw, private.public_key().public_bytes(*RAW))
        return ChaCha20Poly1305(key).decrypt(unb64(nonce, "the nonce"), unb64(ciphertext, "the ciphertext"), associated)
    except (InvalidTag, ValueError):
        raise SealError(
            "the sealed secret does not open with this gateway's key (sealed for another, or changed)"
        ) from None


# ---------------------------------------------------------------------------- a live bot's exchange credentials


def _associated(kind: str, gateway_id: str, bot_id: uuid.UUID, revision: str) -> bytes:
    return f"freqfleet-{kind}/1\n{gateway_id}\n{bot_id}\n{revision}".encode()


def _seal_for(
    kind: str, sealing_key: str, gateway_id: str, bot_id: uuid.UUID, revision: str, plaintext: bytes
) -> dict[str, str | uuid.UUID]:
    """The fields of a sealed box for one gateway and one bot (``kind`` binds it to its use)."""
    ephemeral, nonce, ciphertext = seal(
        public_key(sealing_key), plaintext, _associated(kind, gateway_id, bot_id, revision)
    )
    return {
        "gateway_id": gateway_id,
        "bot_id": bot_id,
        "revision": revision,
        "ephemeral": ephemeral,
        "nonce": nonce,
        "ciphertext": ciphertext,
    }


def _open_for(
    kind: str, what: str, private: X25519PrivateKey, sealed: SealedCredentials, gateway_id: str, bot_id: uuid.UUID
) -> bytes:
    """The plaintext of a box sealed to this gateway for this bot.

    :raises SealError: sealed for another gateway or bot, or changed.
    """
    if sealed.gateway_id != gateway_id or sealed.bot_id != bot_id:
        raise SealError(
            f"{what} was sealed for gateway {sealed.gateway_id} and bot {sealed.bot_id}, "
            f"not for gateway {gateway_id} and bot {bot_id}"
        )
    associated = _associated(kind, gateway_id, bot_id, sealed.revision)
    return open_sealed(private, sealed.ephemeral, sealed.nonce, sealed.ciphertext, associated)


def seal_credentials(
    sealing_key: str, gateway_id: str, bot_id: uuid.UUID, revision: str, credentials: ExchangeCredentials
) -> SealedCredentials:
    """``credentials`` sealed to gateway ``gateway_id`` (its public ``sealing_key``, Base64) for bot ``bot_id``."""
    plaintext = credentials.model_dump_json(exclude_none=True).encode()
    return SealedCredentials.model_validate(
        _seal_for("credentials", sealing_key, gateway_id, bot_id, revision, plaintext)
    )


def open_credentials(
    private: X25519PrivateKey, sealed: SealedCredentials, gateway_id: str, bot_id: uuid.UUID
) -> ExchangeCredentials:
    """The credentials, when they were sealed to this gateway for this bot.

    :raises SealError: sealed for another gateway or bot, or changed.
    """
    plaintext = _open_for("credentials", "the exchange credentials", private, sealed, gateway_id, bot_id)
    try:
        return ExchangeCredentials.model_validate_json(plaintext)
    except ValueError:
        raise SealError("the sealed exchange credentials are not credentials") from None


# ---------------------------------------------------------------------------- a bot's trade database


def seal_database(sealing_key: str, gateway_id: str, bot_id: uuid.UUID, revision: str, url: str) -> SealedDatabase:
    """Bot ``bot_id``'s database URL (with its role's password) sealed to gateway ``gateway_id``."""
    return SealedDatabase.model_validate(_seal_for("database", sealing_key, gateway_id, bot_id, revision, url.encode()))


def open_database(private: X25519PrivateKey, sealed: SealedDatabase, gateway_id: str, bot_id: uuid.UUID) -> str:
    """The database URL, when it was sealed to this gateway for this bot.

    :raises SealError: sealed for another gateway or bot, or changed.
    """
    plaintext = _open_for("database", "the trade database", private, sealed, gateway_id, bot_id)
    try:
        return plaintext.decode()
    except UnicodeDecodeError:
        raise SealError("the sealed trade database is not a URL") from None
