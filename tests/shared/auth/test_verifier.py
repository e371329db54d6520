"""shared/auth/verifier.py: a token checked once is not decoded again for a while, yet a revoked one stops at once
and an expired one stops at its expiry."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from management_server.security.keys import KeyRing, SigningKey
from management_server.security.tokens import sign_token
from shared.auth import InvalidToken, TokenType
from shared.auth.revocation import RevocationStore
from shared.auth.verifier import StaticKeySource, TokenVerifier
from tests.helpers import async_wait_for

ISSUER, AUDIENCE = "freqfleet-test", "freqfleet-api"


def token(keys: KeyRing, lifetime: timedelta = timedelta(minutes=5)) -> tuple[str, uuid.UUID]:
    signed, token_id, _ = sign_token(
        keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=uuid.uuid4(),
        role="user",
        token_type=TokenType.access,
        lifetime=lifetime,
        version=0,
        scopes=frozenset({"read"}),
    )
    return signed, token_id


async def test_a_checked_token_is_remembered_but_revocation_is_asked_every_time(redis_url: str) -> None:
    keys = KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])
    source = StaticKeySource(keys.public_keys())
    redis = aioredis.Redis.from_url(redis_url)
    revocations = RevocationStore(redis)
    verifier = TokenVerifier(source, issuer=ISSUER, audience=AUDIENCE, revocations=revocations)
    signed, token_id = token(keys)
    first = await verifier.verify(signed)

    source.keys.clear()  # were it decoded again, its key would be missing now
    assert await verifier.verify(signed) == first
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(token(keys)[0])  # another token is decoded, and finds no key

    await revocations.revoke_token(token_id, first.expires_at)
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(signed)
    await redis.aclose()


async def test_a_remembered_token_stops_at_its_expiry() -> None:
    keys = KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])
    verifier = TokenVerifier(StaticKeySource(keys.public_keys()), issuer=ISSUER, audience=AUDIENCE)
    signed, _ = token(keys, lifetime=timedelta(seconds=2))
    claims = await verifier.verify(signed)
    assert claims.expires_at.timestamp() <= time.time() + 2

    async def refused() -> str | None:
        try:
            await verifier.verify(signed)
        except InvalidToken as exc:
            return str(exc)
        return None

    assert "expired" in await async_wait_for(refused, timeout=10, what="the token to expire")
