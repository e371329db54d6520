"""Who the client is behind a reverse proxy: the peer, unless the peer is a trusted proxy (``proxy_options``)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import SecretStr, ValidationError

from management_server.config import ManagementSettings
from shared.http import proxy_options
from tests.helpers import serve


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None, "scheme": request.url.scheme}

    return app


@pytest.mark.parametrize(
    ("trusted", "client", "scheme"),
    [
        ([], "127.0.0.1", "http"),  # by default nobody is believed: the peer is the client
        (["10.0.0.0/8"], "127.0.0.1", "http"),  # a proxy elsewhere: this peer is not it
        (["127.0.0.1"], "203.0.113.7", "https"),  # the peer is the proxy: the client is the one it names
        (["127.0.0.0/8"], "203.0.113.7", "https"),
    ],
)
async def test_forwarded_headers_count_only_from_a_trusted_proxy(trusted: list[str], client: str, scheme: str) -> None:
    async with (
        serve(echo_app(), **proxy_options(trusted)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        assert (await http.get("/who", headers=headers)).json() == {"client": client, "scheme": scheme}


def test_trusted_proxies_are_addresses_or_networks() -> None:
    common = {"database_url": SecretStr("postgresql+asyncpg://u:p@h/db"), "redis_url": SecretStr("redis://h:6379/0")}
    settings = ManagementSettings(trusted_proxies="172.28.0.10, 10.1.0.0/16", **common)  # type: ignore[arg-type]
    assert settings.trusted_proxies == ["172.28.0.10", "10.1.0.0/16"]
    assert ManagementSettings(trusted_proxies='["::1"]', **common).trusted_proxies == ["::1"]  # type: ignore[arg-type]
    assert ManagementSettings(**common).trusted_proxies == []
    with pytest.raises(ValidationError, match=r"not an address or a network: 'proxy\.example'"):
        ManagementSettings(trusted_proxies="proxy.example", **common)  # type: ignore[arg-type]
