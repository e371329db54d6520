"""Who may call the gateway's REST routes: tokens of the management server, role admin or service.

Tokens are verified with the management server's public keys (``/.well-known/jwks.json``) and the
revocation store in the gateway's Redis (:class:`shared.auth.TokenVerifier`), as the management
server does: pinned EdDSA, issuer, audience, expiry, type, revocation. The role must be ``admin`` or
``service`` and the token must carry the scope of the route (``read`` to list bots, ``trade`` for
the emergency stop), so a read-only personal access token can't halt the fleet. Errors are the
management server's: 401 with ``WWW-Authenticate: Bearer``, 403, ``{"detail": ...}``.

The local kill switch must work with Redis and the management server down:

- the JWKS is kept on disk (:class:`CachedJwksKeySource`, refreshed whenever it is fetched), so a
  gateway restarted while the management server is down still knows the keys;
- when Redis does not answer, the emergency stop is allowed on a token whose signature, claims, role
  and scope check out, without the revocation lookup (logged as a warning). Stopping bots is the safe
  direction; every other route answers 503 then.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError

from shared.auth import InvalidToken, JwksKeySource, TokenClaims, TokenVerifier
from shared.auth.claims import Scope
from shared.auth.keyset import endorsed_by, raw
from shared.auth.verifier import PublicKey, keys_from_jwks
from shared.files import atomic_write
from shared.logging import get_logger
from shared.metrics import KEYSETS_REFUSED

log = get_logger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False, description="An access token or personal access token of an admin or a service account."
)

UNAUTHORIZED = "Not authenticated: log in and send the access token as 'Authorization: Bearer <token>'."
INVALID = "Invalid or expired token: log in again."
KEYS_UNAVAILABLE = "The management server's signing keys can't be fetched right now; try again shortly."
REVOCATION_UNAVAILABLE = "Tokens can't be checked right now (the gateway's Redis is unavailable); try again shortly."
ROLES = frozenset({"admin", "service"})
JWKS_CACHE = "jwks.json"


class KeysUnavailable(InvalidToken):
    """No signing keys: neither fetched nor cached."""


class CachedJwksKeySource(JwksKeySource):
    """A :class:`JwksKeySource` that keeps the last JWKS it fetched in a file and starts from it: the pinned set.
    A different set is taken only when a pinned key endorses it (:mod:`shared.auth.keyset`)."""

    def __init__(self, url: str, cache: Path, client: httpx.AsyncClient | None = None, ttl: float = 300.0) -> None:
        super().__init__(url, client, ttl)
        self.cache = cache
        try:
            self._keys = keys_from_jwks(json.loads(cache.read_text()))  # refetched at first use (age is "old")
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("cached JWKS unreadable; ignored", path=str(cache), error=str(exc))

    async def _fetch(self) -> None:
        response = await self.client.get(self.url)
        response.raise_for_status()
        document: Any = response.json()
        fetched = keys_from_jwks(document)
        pinned = {kid: raw(key) for kid, key in self._keys.items()}
        if pinned and pinned != {kid: raw(key) for kid, key in fetched.items()}:
            # The set changed: only a key already trusted may vouch for the new one (shared.auth.keyset).
            endorser = endorsed_by(document, self._keys)
            if endorser is None:
                self._fetched_at = time.monotonic()  # keep the pinned keys; look again after the TTL
                KEYSETS_REFUSED.inc()
                log.error(
                    "key set refused: no key this gateway trusts endorses it (a man in the middle, or keys replaced "
                    "without rotation); the pinned keys stay",
                    url=self.url,
                    pinned=sorted(pinned),
                    offered=sorted(fetched),
                )
                return
            log.info("key set rotated", url=self.url, endorsed_by=endorser, kids=sorted(fetched))
        self._keys = fetched
        self._fetched_at = time.monotonic()
        if self._keys:
            try:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.cache, json.dumps(document).encode(), mode=0o600)
            except OSError as exc:  # the keys are fetched; only the copy for a later start is missing
                log.warning("JWKS not kept on disk", path=str(self.cache), error=str(exc))

    async def refresh(self) -> bool:
        """Fetch now (at start, to fill the cache); False when the management server does not answer."""
        try:
            async with self._lock:
                await self._fetch()
        except (httpx.HTTPError, ValueError) as exc:
            log.info("JWKS not fetched", url=self.url, error=str(exc))
            return False
        return True

    async def key(self, kid: str) -> PublicKey | None:
        try:
            return await super().key(kid)
        except InvalidToken as exc:
            raise KeysUnavailable(str(exc)) from None


@dataclass
class GatewayAuth:
    verifier: TokenVerifier  # with the revocation store
    offline: TokenVerifier  # the same checks without revocation, for the kill switch while Redis is away
    keys: CachedJwksKeySource


def _refuse(code: int, detail: str) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return HTTPException(code, detail, headers=headers)


async def _claims(request: Request, token: str, *, without_redis: bool) -> TokenClaims:
    auth: GatewayAuth = request.app.state.gateway_auth
    try:
        try:
            return await auth.verifier.verify(token)
        except (RedisError, OSError) as exc:
            if not without_redis:
                log.warning("token not checked: redis unavailable", error=f"{type(exc).__name__}: {exc}")
                raise _refuse(status.HTTP_503_SERVICE_UNAVAILABLE, REVOCATION_UNAVAILABLE) from None
            claims = await auth.offline.verify(token)
            log.warning(
                "redis unavailable: token accepted without its revocation check (emergency stop only)",
                subject=str(claims.subject),
                token_id=str(claims.token_id),
            )
            return claims
    except KeysUnavailable:
        raise _refuse(status.HTTP_503_SERVICE_UNAVAILABLE, KEYS_UNAVAILABLE) from None
    except InvalidToken as exc:
        log.info("token refused", reason=str(exc))
        raise _refuse(status.HTTP_401_UNAUTHORIZED, INVALID) from None


async def _principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope, *, without_redis: bool
) -> TokenClaims:
    if credentials is None or not credentials.credentials:
        raise _refuse(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED)
    claims = await _claims(request, credentials.credentials, without_redis=without_redis)
    if claims.role not in ROLES:
        log.info("gateway route refused", subject=str(claims.subject), role=claims.role, path=request.url.path)
        raise _refuse(status.HTTP_403_FORBIDDEN, "Only an admin or a service account may do this.")
    if claims.role == "admin" and not claims.has_scope(Scope.admin):
        # Admin power is the role *and* the admin scope: an admin's read/trade token is a plain user's here.
        raise _refuse(status.HTTP_403_FORBIDDEN, "This token lacks the 'admin' scope: only an admin's admin token may.")
    if not claims.has_scope(scope):
        raise _refuse(status.HTTP_403_FORBIDDEN, f"This token lacks the '{scope.value}' scope.")
    return claims


async def reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> TokenClaims:
    return await _principal(request, credentials, Scope.read, without_redis=False)


async def emergency_operator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> TokenClaims:
    return await _principal(request, credentials, Scope.trade, without_redis=True)


Reader = Annotated[TokenClaims, Depends(reader)]
EmergencyOperator = Annotated[TokenClaims, Depends(emergency_operator)]
