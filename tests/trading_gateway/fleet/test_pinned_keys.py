"""The management server's key sets, pinned by the gateway: a rotation passes, a substitution does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from management_server.security.keys import KeyRing, SigningKey
from shared.auth.keyset import endorse
from shared.metrics import KEYSETS_REFUSED
from tests.helpers import serve
from trading_gateway.auth import CachedJwksKeySource


async def test_a_rotation_endorsed_by_a_pinned_key_passes_and_a_substitution_does_not(tmp_path: Path) -> None:
    served: dict[str, Any] = {}
    app = FastAPI()

    @app.get("/keys.json")
    async def keys() -> dict[str, Any]:
        return served

    first = KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])
    old = first.active
    served.update(first.jwks())
    async with serve(app) as url:
        source = CachedJwksKeySource(url + "/keys.json", tmp_path / "keys.json")
        try:
            assert await source.refresh()  # first contact: pinned
            assert set(source._keys) == {old.kid}
            assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0

            # Someone in the middle serves a set of its own (endorsed by itself, even claiming the pinned kid).
            attacker = SigningKey.of(Ed25519PrivateKey.generate())
            substituted = endorse(
                {"keys": [attacker.jwk()]}, [(attacker.kid, attacker.private), (old.kid, attacker.private)]
            )
            served.clear()
            served.update(substituted)
            refused_before = KEYSETS_REFUSED._value.get()
            assert await source.refresh()
            assert set(source._keys) == {old.kid}  # the pinned keys stay
            assert KEYSETS_REFUSED._value.get() == refused_before + 1
            assert await source.key(attacker.kid) is None

            # A rotation: a new key added while the old one still signs the set.
            new = SigningKey.of(Ed25519PrivateKey.generate())
            rotated = KeyRing([old, new])
            served.clear()
            served.update(rotated.jwks())
            assert await source.refresh()
            assert set(source._keys) == {old.kid, new.kid}
            # Later the old key is retired: the new one (pinned by now) vouches for the set.
            served.clear()
            served.update(KeyRing([new]).jwks())
            assert await source.refresh()
            assert set(source._keys) == {new.kid}
            # A restarted gateway starts from what it pinned.
            again = CachedJwksKeySource(url + "/keys.json", tmp_path / "keys.json")
            assert set(again._keys) == {new.kid}
            await again.client.aclose()
        finally:
            await source.client.aclose()
