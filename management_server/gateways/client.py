"""The management server calling a gateway's REST API, with a service token it signs itself.

The gateway accepts tokens of the role ``service`` (or ``admin``) signed by the management server's
keys (it verifies them with the public JWKS, as any other token). So the management server needs no
stored secret to call a gateway: it mints itself a short-lived access token (role ``service``, scope
``read``, subject :data:`SERVICE_SUBJECT`) for one gateway: its audience is that gateway's own
(``<audience>:gateway:<id>``), so no other gateway and not the management server's API accept it, and it lives
:data:`TOKEN_LIFETIME` (renewed :data:`RENEW_BEFORE` seconds before it ends). It goes only to an enrolled
gateway's URL, as its signed heartbeats report it. Nothing here is logged with the token.
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
from shared.auth.verifier import gateway_audience

SERVICE_SUBJECT = uuid.uuid5(uuid.NAMESPACE_URL, "freqfleet:management-server")
TOKEN_LIFETIME = timedelta(seconds=60)
RENEW_BEFORE = 15.0  # seconds


class GatewayUnavailable(Exception):
    """The gateway could not be asked, or did not answer as expected; the message says why."""


class GatewayClient:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, timeout: float = 30.0) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.http = httpx.AsyncClient(timeout=timeout)
        self._tokens: dict[str, tuple[str, float]] = {}  # gateway id -> (token, renew at)

    async def aclose(self) -> None:
        await self.http.aclose()

    def token(self, gateway_id: str) -> str:
        """A service token only gateway ``gateway_id`` accepts."""
        cached = self._tokens.get(gateway_id)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        token, _, _ = sign_token(
            self.keys,
            issuer=self.issuer,
            audience=gateway_audience(self.audience, gateway_id),
            subject=SERVICE_SUBJECT,
            role="service",
            token_type=TokenType.access,
            lifetime=TOKEN_LIFETIME,
            version=0,
            scopes=frozenset({Scope.read.value}),
        )
        self._tokens[gateway_id] = (token, time.monotonic() + TOKEN_LIFETIME.total_seconds() - RENEW_BEFORE)
        return token

    async def _get(self, gateway_id: str, api_url: str, path: str, params: dict[str, Any] | None = None) -> Any:
        url = f"{api_url.rstrip('/')}{path}"
        try:
            response = await self.http.get(
                url, params=params, headers={"Authorization": f"Bearer {self.token(gateway_id)}"}
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise GatewayUnavailable(f"{url} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    async def closed_trades(self, gateway_id: str, api_url: str, bot_id: uuid.UUID) -> dict[str, Any]:
        """``GET /api/v1/bots/{bot_id}/trades`` of gateway ``gateway_id`` at ``api_url``."""
        body = await self._get(gateway_id, api_url, f"/api/v1/bots/{bot_id}/trades")
        if not isinstance(body, dict) or not isinstance(body.get("trades"), list):
            raise GatewayUnavailable(f"gateway {gateway_id} answered something that is not a list of trades")
        return body

    async def bot_log(self, gateway_id: str, api_url: str, bot_id: uuid.UUID, lines: int) -> dict[str, Any]:
        """``GET /api/v1/bots/{bot_id}/logs?lines=N`` of gateway ``gateway_id``: its source and lines."""
        body = await self._get(gateway_id, api_url, f"/api/v1/bots/{bot_id}/logs", {"lines": lines})
        if not isinstance(body, dict) or not isinstance(body.get("lines"), list):
            raise GatewayUnavailable(f"gateway {gateway_id} answered something that is not a bot's log")
        return body
