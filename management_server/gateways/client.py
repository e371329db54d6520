"""The management server calling a gateway's REST API, with a service token it signs itself.

The gateway accepts tokens of the role ``service`` (or ``admin``) signed by the management server's
keys (it verifies them with the public JWKS, as any other token). So the management server needs no
stored secret to call a gateway: it mints itself a short-lived access token (role ``service``, scope
``read``, subject :data:`SERVICE_SUBJECT`, 5 minutes) and renews it a minute before it expires. The
gateway's URL comes from its heartbeats (``api_url``). Nothing here is logged with the token.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import httpx

from management_server.security.keys import KeyRing
from management_server.security.tokens import sign_token
from shared.auth import TokenType
from shared.auth.claims import Scope

SERVICE_SUBJECT = uuid.uuid5(uuid.NAMESPACE_URL, "freqfleet:management-server")
TOKEN_LIFETIME = timedelta(minutes=5)
RENEW_BEFORE = 60.0  # seconds


class GatewayUnavailable(Exception):
    """The gateway could not be asked, or did not answer as expected; the message says why."""


class GatewayClient:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, timeout: float = 30.0) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.http = httpx.AsyncClient(timeout=timeout)
        self._token: str | None = None
        self._renew_at = 0.0

    async def aclose(self) -> None:
        await self.http.aclose()

    def token(self) -> str:
        if self._token is None or time.monotonic() >= self._renew_at:
            self._token, _, _ = sign_token(
                self.keys,
                issuer=self.issuer,
                audience=self.audience,
                subject=SERVICE_SUBJECT,
                role="service",
                token_type=TokenType.access,
                lifetime=TOKEN_LIFETIME,
                version=0,
                scopes=frozenset({Scope.read.value}),
            )
            self._renew_at = time.monotonic() + TOKEN_LIFETIME.total_seconds() - RENEW_BEFORE
        return self._token

    async def closed_trades(self, api_url: str, bot_id: uuid.UUID) -> dict[str, Any]:
        """``GET /api/v1/bots/{bot_id}/trades`` of the gateway at ``api_url``."""
        url = f"{api_url.rstrip('/')}/api/v1/bots/{bot_id}/trades"
        try:
            response = await self.http.get(url, headers={"Authorization": f"Bearer {self.token()}"})
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise GatewayUnavailable(f"{url} answered {response.status_code}: {response.text[:300]}")
        body: Any = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("trades"), list):
            raise GatewayUnavailable(f"{url} answered something that is not a list of trades")
        return body
