"""Where the management server reaches a gateway (its heartbeat's ``api_url``)."""

from __future__ import annotations

import socket

from pydantic import SecretStr

from trading_gateway.config import GatewaySettings


def test_the_gateways_url_by_default_and_when_set() -> None:
    base = {"redis_url": SecretStr("redis://127.0.0.1:1/0"), "gateway_id": "gw-url"}
    assert GatewaySettings(**base, gateway_port=8123).api_url == "http://127.0.0.1:8123"
    everywhere = GatewaySettings(**base, gateway_host="0.0.0.0", gateway_port=8001)
    assert everywhere.api_url == f"http://{socket.gethostname()}:8001"
    given = GatewaySettings(**base, gateway_public_url="https://gw.example.org/")
    assert given.api_url == "https://gw.example.org"
