"""Who may talk MCP to this gateway: checked before a connection is accepted, on both transports.

- **Token.** An access token or a personal access token of the management server, verified as the
  gateway's REST routes verify them (:class:`shared.auth.TokenVerifier` with the management server's
  JWKS and the revocation store in Redis: pinned EdDSA, issuer, **audience**, expiry, type, revoked).
  It comes in ``Authorization: Bearer <token>``; WebSocket clients that can't set headers (browsers)
  may put it in ``?token=`` instead. Streamable HTTP takes the header only: a URL ends up in logs
  and proxies. Any role may connect; what a caller may do is decided per tool (scopes ``read`` and
  ``trade``, and ownership, which the management server knows).
- **Origin.** A browser sends ``Origin`` on every cross-site request and WebSocket handshake; one
  that is not in ``mcp_allowed_origins`` is refused, so a web page can't drive the fleet through a
  user's browser (DNS rebinding included: the page's origin is still its own). No ``Origin`` means a
  non-browser client (an agent, a script), which is allowed.
- **Refusals** are plain HTTP answers with ``{"detail": ...}`` before anything MCP happens: 401
  (with ``WWW-Authenticate: Bearer``) for a missing, invalid or expired token, 403 for a foreign
  origin, 503 when the signing keys or the revocation store can't be reached. They are logged with
  the reason; the token never is.
- Every Streamable HTTP request, and every tool call on an open WebSocket, checks the token: its expiry
  every time, its revocation at most once a ``RECHECK_SECONDS`` (1 s) per token, so a revoked token stops
  working within a second (a Redis round trip per call was a tenth of a call's CPU). A WebSocket also
  ends at the token's expiry.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from redis.exceptions import RedisError

from shared.auth import InvalidToken, TokenClaims
from shared.auth.claims import Scope
from shared.logging import get_logger
from trading_gateway.auth import INVALID, KEYS_UNAVAILABLE, REVOCATION_UNAVAILABLE, GatewayAuth, KeysUnavailable

log = get_logger(__name__)

Transport = Literal["websocket", "streamable_http"]

RECHECK_SECONDS = 1.0  # on an open WebSocket, a revoked token stops within this
RECHECKED_MAX = 10_000
NOT_AUTHENTICATED = (
    "Not authenticated: send an access token or a personal access token of the management server as "
    "'Authorization: Bearer <token>' (WebSocket clients may use '?token=<token>' instead)."
)
FOREIGN_ORIGIN = (
    "This origin may not use the gateway's MCP endpoints: an operator can allow it with FREQFLEET_MCP_ALLOWED_ORIGINS."
)


class Refused(Exception):
    """A connection (or call) refused before any MCP exchange; ``detail`` says why, for the client."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self._headers = headers or {}

    @property
    def headers(self) -> dict[str, str]:
        return ({"WWW-Authenticate": "Bearer"} if self.status == 401 else {}) | self._headers


@dataclass(frozen=True)
class Caller:
    """An authenticated MCP client: its token's claims and the token itself (to call the management
    server on its behalf; never logged, never in a repr)."""

    claims: TokenClaims
    token: str = field(repr=False)
    transport: Transport
    client_ip: str | None = None

    @property
    def subject(self) -> uuid.UUID:
        return self.claims.subject

    @property
    def role(self) -> str:
        return self.claims.role

    @property
    def is_admin(self) -> bool:
        """Admin power: the role admin *and* the admin scope (an admin's read/trade token acts as a user's)."""
        return self.claims.role == "admin" and self.claims.has_scope(Scope.admin.value)

    def has_scope(self, scope: Scope) -> bool:
        return self.claims.has_scope(scope.value)

    @property
    def label(self) -> str:
        """Who, for log lines and ``requested_by`` fields: role and user id, no secret."""
        return f"{self.claims.role}:{self.claims.subject}"


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The token from ``Authorization: Bearer``, else (when ``query`` is given) from ``?token=``."""
    header = headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if query is not None and (token := query.get("token", "").strip()):
        return token
    return None


class McpAuth:
    def __init__(self, gateway_auth: GatewayAuth, allowed_origins: Sequence[str]) -> None:
        self.gateway_auth = gateway_auth
        self.allowed_origins = frozenset(origin.rstrip("/") for origin in allowed_origins)
        self._recent: dict[str, tuple[float, TokenClaims]] = {}  # token -> when it was verified in full, its claims

    def check_origin(self, headers: Mapping[str, str], transport: Transport) -> None:
        origin = headers.get("origin")
        if origin is None:
            return
        if origin.rstrip("/") not in self.allowed_origins:
            log.info("mcp connection refused: foreign origin", origin=origin[:200], transport=transport)
            raise Refused(403, FOREIGN_ORIGIN)

    async def authenticate(
        self,
        headers: Mapping[str, str],
        *,
        transport: Transport,
        client_ip: str | None,
        query: Mapping[str, str] | None = None,
    ) -> Caller:
        """The caller, or :class:`Refused` (origin first: a foreign page learns nothing about tokens)."""
        self.check_origin(headers, transport)
        token = bearer_token(headers, query if transport == "websocket" else None)
        if token is None:
            log.info("mcp connection refused: no token", transport=transport, client_ip=client_ip)
            raise Refused(401, NOT_AUTHENTICATED)
        claims = await self._checked(token, transport=transport, client_ip=client_ip)
        return Caller(claims=claims, token=token, transport=transport, client_ip=client_ip)

    async def recheck(self, caller: Caller) -> Caller:
        """Check the caller's token again before a call on a long-lived connection."""
        claims = await self._checked(caller.token, transport=caller.transport, client_ip=caller.client_ip)
        return Caller(claims=claims, token=caller.token, transport=caller.transport, client_ip=caller.client_ip)

    async def _checked(self, token: str, *, transport: Transport, client_ip: str | None) -> TokenClaims:
        """The token's claims: its expiry checked every time, its revocation (a Redis round trip) at most once a
        ``RECHECK_SECONDS`` per token, so a revoked token stops working within that on every transport."""
        now = time.monotonic()
        recent = self._recent.get(token)
        if recent is not None and now - recent[0] < RECHECK_SECONDS:
            if recent[1].expires_at.timestamp() > time.time():
                return recent[1]
            raise Refused(401, INVALID)
        claims = await self._verify(token, transport=transport, client_ip=client_ip)
        if len(self._recent) >= RECHECKED_MAX:
            self._recent = {t: entry for t, entry in self._recent.items() if now - entry[0] < RECHECK_SECONDS}
        self._recent[token] = (now, claims)
        return claims

    async def _verify(self, token: str, *, transport: Transport, client_ip: str | None) -> TokenClaims:
        try:
            return await self.gateway_auth.verifier.verify(token)
        except KeysUnavailable:
            raise Refused(503, KEYS_UNAVAILABLE) from None
        except InvalidToken as exc:
            log.info("mcp token refused", reason=str(exc), transport=transport, client_ip=client_ip)
            raise Refused(401, INVALID) from None
        except (RedisError, OSError) as exc:
            log.warning("mcp token not checked: redis unavailable", error=f"{type(exc).__name__}: {exc}")
            raise Refused(503, REVOCATION_UNAVAILABLE) from None
