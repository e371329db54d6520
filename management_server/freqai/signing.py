"""The model-signing keys: Ed25519, separate from the keys that sign tokens.

A bundle sent to a gateway carries an Ed25519 signature over its model id, version, sha256 and size
(:func:`shared.freqai.bundle.signing_message`), made at the moment it is sent with the newest key. The
gateways verify it with the public keys served at ``/.well-known/model-keys.json`` (a JWKS document, like
``/.well-known/jwks.json``), before they decompress anything. Keys come from ``FREQFLEET_MODEL_SIGNING_KEYS``
(PEM blocks, the last one signs) or from ``<data dir>/model-signing-keys``, where the first start generates
one (mode 0600). A key of its own means that a token-signing key that leaks can't sign models, and the
reverse. Only the management server signs: the workers that train never hold the key.
"""

from __future__ import annotations

import uuid

from management_server.config import ManagementSettings
from management_server.security.keys import KeyRing
from shared.freqai.bundle import sign_bundle

KEYS_DIR = "model-signing-keys"
WELL_KNOWN_PATH = "/.well-known/model-keys.json"


def load_signing_keys(settings: ManagementSettings) -> KeyRing:
    return KeyRing.configured(settings.model_signing_keys, settings.data_dir / KEYS_DIR, "FREQFLEET_MODEL_SIGNING_KEYS")


def sign(keys: KeyRing, *, model_id: uuid.UUID, version: int, sha256: str, size: int) -> str:
    """The Base64 signature a ``ModelBundle`` carries, by the newest model-signing key."""
    return sign_bundle(keys.active.private, model_id=model_id, version=version, sha256=sha256, size=size)
