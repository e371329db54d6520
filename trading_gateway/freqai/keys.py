"""The management server's model-signing public keys, as the gateway gets them.

The management server publishes them at ``/.well-known/model-keys.json`` (beside ``jwks.json``), in the same
JWKS form (``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ..., "kid": ...}]}``); the gateway's setting
``FREQFLEET_MODEL_KEYS_URL`` points elsewhere if needed. They are cached like the token keys: five minutes
in memory, a copy on disk (``model-keys.json`` in the gateway's data folder) so a gateway restarted while the
management server is down still verifies bundles, and refetched (at most every 30 s) when a signature
verifies with none of them, so a key rotation is picked up at once.
"""

from __future__ import annotations

import time

import httpx

from shared.auth.verifier import PublicKey
from shared.logging import get_logger
from trading_gateway.auth import CachedJwksKeySource

log = get_logger(__name__)

MODEL_KEYS_CACHE = "model-keys.json"
MODEL_KEYS_PATH = "/.well-known/model-keys.json"


class ModelKeysUnavailable(Exception):
    """No model-signing key is known: none fetched, none on disk."""


class ModelKeySource(CachedJwksKeySource):
    """Every published model-signing key (a bundle's signature names no key: each is tried)."""

    async def public_keys(self, *, refresh: bool = False) -> list[PublicKey]:
        """The keys, fetched when older than the TTL (or on ``refresh``, at most every ``refetch_interval``).

        :raises ModelKeysUnavailable: none could be fetched and none is cached.
        """
        age = time.monotonic() - self._fetched_at
        if not self._keys or age > self.ttl or (refresh and age > self.refetch_interval):
            async with self._lock:
                age = time.monotonic() - self._fetched_at
                if not self._keys or age > self.ttl or (refresh and age > self.refetch_interval):
                    try:
                        await self._fetch()
                    except (httpx.HTTPError, ValueError) as exc:
                        log.warning("model-signing keys not fetched", url=self.url, error=str(exc))
                        self._fetched_at = time.monotonic()  # not again before refetch_interval / ttl
        if not self._keys:
            raise ModelKeysUnavailable(
                f"the management server's model-signing keys are not available ({self.url} did not give any and "
                "none is cached): try again when the management server answers"
            )
        return list(self._keys.values())
