"""The gateway's identity: the keys that make it an enrolled gateway.

Made at the gateway's first start (or by ``freqfleet gateways identity``) in ``<gateway dir>/identity.json``,
mode 0600, and never leaving the host:

- an **Ed25519 signing key**: the gateway signs every entry it puts on ``freqfleet:events`` with it (heartbeats
  included), so the management server acts only on reports of gateways it enrolled;
- an **X25519 sealing key**: a live bot's exchange credentials reach the gateway sealed to it
  (:mod:`shared.sealing`) and are opened only to write that bot's 0600 config.

An admin enrolls the gateway by giving the management server the public halves: the one line
:meth:`GatewayIdentity.enrollment` prints (``freqfleet gateways enroll <line>``). Losing the file means enrolling
again; copying it to another host makes that host this gateway (keep it like an SSH host key).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.bus.messages import SealedCredentials, SealedDatabase
from shared.bus.signing import EVENT_DOMAIN, EntrySigner
from shared.exchange import ExchangeCredentials
from shared.files import atomic_write, open_read_nofollow
from shared.sealing import open_credentials, open_database

IDENTITY_FILE = "identity.json"
ENROLLMENT_PREFIX = "ffgw1"
_RAW_PRIVATE = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
_RAW_PUBLIC = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class IdentityError(Exception):
    """The identity file is unreadable or not an identity."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class GatewayIdentity:
    gateway_id: str
    signing: Ed25519PrivateKey
    sealing: X25519PrivateKey

    @property
    def signing_public(self) -> str:
        return _b64(self.signing.public_key().public_bytes(*_RAW_PUBLIC))

    @property
    def sealing_public(self) -> str:
        return _b64(self.sealing.public_key().public_bytes(*_RAW_PUBLIC))

    def open_credentials(self, sealed: SealedCredentials, bot_id: str) -> ExchangeCredentials:
        """A live bot's exchange credentials, opened for its config only.

        :raises SealError: not sealed to this gateway for this bot, or changed.
        """
        plain = open_credentials(self.sealing, sealed, self.gateway_id, uuid.UUID(bot_id))
        return ExchangeCredentials(
            key=plain.key.get_secret_value(),
            secret=plain.secret.get_secret_value(),
            password=None if plain.password is None else plain.password.get_secret_value(),
        )

    def open_database(self, sealed: SealedDatabase, bot_id: str) -> str:
        """A bot's trade database URL (with its password), opened for its config only.

        :raises SealError: not sealed to this gateway for this bot, or changed.
        """
        return open_database(self.sealing, sealed, self.gateway_id, uuid.UUID(bot_id))

    def event_signer(self) -> EntrySigner:
        return EntrySigner(self.signing, self.gateway_id, EVENT_DOMAIN)

    def enrollment(self) -> str:
        """One line with the gateway id and both public keys: what an admin enrolls."""
        return f"{ENROLLMENT_PREFIX}:{self.gateway_id}:{self.signing_public}:{self.sealing_public}"

    def save(self, path: Path) -> None:
        body = {
            "gateway_id": self.gateway_id,
            "signing_key": _b64(self.signing.private_bytes(*_RAW_PRIVATE)),
            "sealing_key": _b64(self.sealing.private_bytes(*_RAW_PRIVATE)),
        }
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, json.dumps(body, indent=2).encode(), mode=0o600)


def load_or_create(folder: Path, gateway_id: str) -> GatewayIdentity:
    """The identity in ``folder`` (made on first use). One of another gateway id is refused."""
    path = folder / IDENTITY_FILE
    try:
        with open_read_nofollow(path) as file:
            body = json.loads(file.read())
    except FileNotFoundError:
        identity = GatewayIdentity(gateway_id, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
        identity.save(path)
        return identity
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: not readable as a gateway identity ({type(exc).__name__}: {exc})") from None
    try:
        identity = GatewayIdentity(
            str(body["gateway_id"]),
            Ed25519PrivateKey.from_private_bytes(base64.b64decode(body["signing_key"], validate=True)),
            X25519PrivateKey.from_private_bytes(base64.b64decode(body["sealing_key"], validate=True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IdentityError(f"{path}: not a gateway identity ({type(exc).__name__}: {exc})") from None
    if identity.gateway_id != gateway_id:
        raise IdentityError(f"{path} is the identity of gateway {identity.gateway_id}, not {gateway_id}")
    return identity
