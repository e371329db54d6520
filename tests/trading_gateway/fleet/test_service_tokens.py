"""The management server's own tokens for a gateway: accepted by that gateway only, short-lived."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from management_server.gateways.client import TOKEN_LIFETIME, GatewayClient
from shared.auth import TokenVerifier
from shared.auth.verifier import InvalidToken
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.management_server.conftest import bearer
from tests.trading_gateway.conftest import Tokens, running_gateway, settings_for
from trading_gateway.config import GatewaySettings


async def test_a_token_for_one_gateway_is_refused_by_another_and_by_the_management_api(
    simulator: SimulatorProcess, tokens: Tokens, redis_url: str, tmp_path: Path, cleanup: list[GatewaySettings]
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, tokens)
    cleanup.append(settings)
    client = GatewayClient(tokens.keys, issuer="freqfleet", audience="freqfleet")
    try:
        mine, theirs = client.token(settings.gateway_id), client.token("gw-elsewhere")
        assert client.token(settings.gateway_id) == mine  # kept until shortly before it ends
        async with running_gateway(settings) as gw:
            listed = await gw.http.get("/api/v1/bots", headers=bearer(mine))
            assert listed.status_code == 200, listed.text
            refused = await gw.http.get("/api/v1/bots", headers=bearer(theirs))
            assert refused.status_code == 401
            # A service account's ordinary token (the shared audience) still works, as the README's table says.
            assert (await gw.http.get("/api/v1/bots", headers=bearer(tokens.mint("service")))).status_code == 200

        # The management server's API verifies the shared audience only: a gateway can't use what it was sent.
        class Keys:
            async def key(self, kid: str) -> object:
                return next((k.private.public_key() for k in tokens.keys.keys if k.kid == kid), None)

        management_api = TokenVerifier(Keys(), issuer="freqfleet", audience="freqfleet")
        with pytest.raises(InvalidToken, match="Audience"):
            await management_api.verify(mine)
        assert TOKEN_LIFETIME.total_seconds() <= 60
        claims = await TokenVerifier(
            Keys(), issuer="freqfleet", audience=f"freqfleet:gateway:{settings.gateway_id}"
        ).verify(mine)
        assert (claims.expires_at.timestamp() - time.time()) <= 60
    finally:
        await client.aclose()
