"""Verifying Freqfleet JWTs: EdDSA only, issuer and audience checked, revocation honoured.

The management server signs with Ed25519 keys and publishes the public halves at
``/.well-known/jwks.json``. A verifier pins the algorithm (so ``alg: none`` or an HS256
token "signed" with the public key never verifies), picks the key by ``kid``, checks
``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, the token type, and asks the revocation
store. The gateway uses it with a ``JwksKeySource`` (fetched and cached, refetched when
an unknown ``kid`` shows up after a rotation, at most every 30 s); the management server
with its own keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
from jwt.algorithms import OKPAlgorithm

from shared.auth.claims import ALGORITHM, TokenClaims, TokenType
from shared.auth.revocation import RevocationStore

PublicKey = Any  # cryptography's Ed25519PublicKey


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (for logs and audit, not for clients)."""


class KeySource(Protocol):
    async def key(self, kid: str) -> PublicKey | None: ...


class StaticKeySource:
    def __init__(self, keys: Mapping[str, PublicKey]) -> None:
        self.keys = dict(keys)

    async def key(self, kid: str) -> PublicKey | None:
        return self.keys.get(kid)


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for entry in jwks.get("keys", []):
        if entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519" and entry.get("kid"):
            keys[str(entry["kid"])] = OKPAlgorithm.from_jwk(entry)
    return keys


class JwksKeySource:
    """Public keys from a JWKS URL, cached for ``ttl`` seconds."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None, ttl: float = 300.0) -> None:
        self.url = url
        self.client = client or httpx.AsyncClient(timeout=5.0)
        self.ttl = ttl
        self.refetch_interval = 30.0
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        response = await self.client.get(self.url)
        response.raise_for_status()
        self._keys = keys_from_jwks(response.json())
        self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> PublicKey | None:
        age = time.monotonic() - self._fetched_at
        if kid not in self._keys or age > self.ttl:
            async with self._lock:
                age = time.monotonic() - self._fetched_at
                stale = age > self.ttl or (kid not in self._keys and age > self.refetch_interval)
                if stale:
                    try:
                        await self._fetch()
                    except (httpx.HTTPError, ValueError):
                        if not self._keys:
                            raise InvalidToken("signing keys are unavailable") from None
        return self._keys.get(kid)


VERIFIED_SECONDS = 60.0  # how long a token's checked signature and claims are remembered (never past its expiry)
VERIFIED_MAX = 10_000  # tokens remembered at most


def gateway_audience(audience: str, gateway_id: str) -> str:
    """The audience of the management server's own tokens for one gateway: only that gateway accepts them."""
    return f"{audience}:gateway:{gateway_id}"


class TokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str | Sequence[str],
        revocations: RevocationStore | None = None,
        accept: frozenset[TokenType] = frozenset({TokenType.access, TokenType.pat}),
        leeway_seconds: int = 0,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self.accept = accept
        self.leeway_seconds = leeway_seconds
        # Tokens whose signature and claims were checked: (claims, wall-clock time until which that holds).
        self._verified: dict[str, tuple[TokenClaims, float]] = {}

    async def verify(self, token: str) -> TokenClaims:
        """The token's claims once its signature, algorithm, key, issuer, audience, times and type are right and it
        is not revoked. A token checked before is not decoded again for ``VERIFIED_SECONDS`` (never past its expiry):
        the same bytes under the same keys give the same answer, and the keys themselves are cached longer (the
        JWKS, ``ttl``). The revocation store is asked on every call, so a revoked token stops at once."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and now < cached[1]:
            claims = cached[0]
        else:
            claims = await self._decode(token)
            until = min(now + VERIFIED_SECONDS, claims.expires_at.timestamp() + self.leeway_seconds)
            if len(self._verified) >= VERIFIED_MAX:
                self._prune(now)
            self._verified[token] = (claims, until)
        if self.revocations is not None and (reason := await self.revocations.revocation_reason(claims)):
            raise InvalidToken(reason)
        return claims

    def _prune(self, now: float) -> None:
        """Drop what has expired; still full, the oldest half (dicts keep insertion order)."""
        self._verified = {t: entry for t, entry in self._verified.items() if entry[1] > now}
        if len(self._verified) >= VERIFIED_MAX:
            self._verified = dict(list(self._verified.items())[VERIFIED_MAX // 2 :])

    async def _decode(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a JWT: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key (kid)")
        key = await self.keys.key(kid)
        if key is None:
            raise InvalidToken(f"unknown signing key {kid!r}")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience if isinstance(self.audience, str) else list(self.audience),
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return self._claims(payload)

    def _claims(self, payload: Mapping[str, Any]) -> TokenClaims:
        try:
            token_type = TokenType(payload["typ"])
            claims = TokenClaims(
                subject=uuid.UUID(str(payload["sub"])),
                role=str(payload.get("role", "")),
                token_type=token_type,
                token_id=uuid.UUID(str(payload["jti"])),
                scopes=frozenset(str(payload.get("scope", "")).split()),
                version=int(payload.get("ver", 0)),
                issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidToken(f"malformed claims: {exc}") from None
        if token_type not in self.accept:
            raise InvalidToken(f"a {token_type.value} token is not accepted here")
        return claims
