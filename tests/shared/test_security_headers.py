"""Security headers and CORS over real HTTP, on a tiny app of the test."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry

from shared.http import install_http_plumbing
from shared.security_headers import DOCS_CSP, HSTS, STRICT_CSP, install_cors
from shared.settings import CommonSettings
from tests.helpers import serve

ALLOWED = "https://fleet.example.com"


def _app(*, hsts: bool = False, origins: list[str] | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/api/things")
    async def things() -> list[str]:
        return ["a"]

    @app.post("/api/things")
    async def add_thing() -> dict[str, str]:
        return {"added": "yes"}

    @app.get("/api/cached")
    async def cached(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "max-age=60"
        return {"cached": "yes"}

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    install_cors(app, origins or [])
    install_http_plumbing(app, CollectorRegistry(), hsts=hsts)
    return app


def _csp_sources(policy: str) -> dict[str, list[str]]:
    directives = (part.strip().split() for part in policy.split(";") if part.strip())
    return {d[0]: d[1:] for d in directives}


def _allows(policy: str, directive: str, url: str) -> bool:
    sources = _csp_sources(policy)
    allowed = sources.get(directive, sources["default-src"])
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" in allowed


async def test_api_responses_carry_the_security_headers_and_no_store() -> None:
    async with serve(_app()) as url, httpx.AsyncClient(base_url=url) as client:
        api = await client.get("/api/things")
        cached = await client.get("/api/cached")
        health = await client.get("/health/live")
        missing = await client.get("/api/nowhere")

    for response in (api, health, missing):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"
        assert response.headers["Content-Security-Policy"] == STRICT_CSP
        assert "Strict-Transport-Security" not in response.headers
    assert api.headers["Cache-Control"] == "no-store"
    assert missing.status_code == 404
    assert missing.headers["Cache-Control"] == "no-store"
    # Outside /api/ no cache policy is imposed, and a route's own one is kept.
    assert "Cache-Control" not in health.headers
    assert cached.headers.get_list("Cache-Control") == ["max-age=60"]


async def test_hsts_only_when_asked_for() -> None:
    async with serve(_app(hsts=True)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/health/live")
    assert response.headers["Strict-Transport-Security"] == HSTS


async def test_the_docs_pages_get_a_policy_that_allows_exactly_what_they_load() -> None:
    async with serve(_app()) as url, httpx.AsyncClient(base_url=url) as client:
        swagger = await client.get("/docs")
        redoc = await client.get("/redoc")
        redirect = await client.get("/docs/oauth2-redirect")
        schema = await client.get("/openapi.json")

    for page in (swagger, redoc, redirect):
        assert page.status_code == 200
        assert page.headers["Content-Security-Policy"] == DOCS_CSP
        assert "'none'" in _csp_sources(page.headers["Content-Security-Policy"])["frame-ancestors"]
    assert schema.headers["Content-Security-Policy"] == STRICT_CSP

    # Every script and stylesheet the installed FastAPI's pages load comes from a source the policy allows.
    scripts = re.findall(r'<script src="([^"]+)"', swagger.text + redoc.text)
    styles = re.findall(r'<link[^>]*rel="stylesheet"[^>]*>', swagger.text + redoc.text)
    style_urls = [href for tag in styles for href in re.findall(r'href="([^"]+)"', tag)]
    icons = re.findall(r'<link rel="shortcut icon" href="([^"]+)"', swagger.text + redoc.text)
    assert len(scripts) == 2
    assert len(style_urls) == 2
    assert icons
    assert all(_allows(DOCS_CSP, "script-src", u) for u in scripts), scripts
    assert all(_allows(DOCS_CSP, "style-src", u) for u in style_urls), style_urls
    assert all(_allows(DOCS_CSP, "img-src", u) for u in icons), icons
    # The inline start-up script of Swagger UI and the redirect page, and ReDoc's search worker.
    assert "<script>" in swagger.text
    assert "'unsafe-inline'" in _csp_sources(DOCS_CSP)["script-src"]
    assert "blob:" in _csp_sources(DOCS_CSP)["worker-src"]


async def test_cors_preflight_is_allowed_for_an_allowlisted_origin_only() -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with serve(_app(origins=[ALLOWED])) as url, httpx.AsyncClient(base_url=url) as client:
        allowed = await client.options("/api/things", headers={"Origin": ALLOWED, **preflight})
        refused = await client.options("/api/things", headers={"Origin": "https://evil.example", **preflight})
        simple = await client.get("/api/things", headers={"Origin": ALLOWED})
        foreign = await client.get("/api/things", headers={"Origin": "https://evil.example"})
        put = await client.options("/api/things", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "PUT"})

    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in allowed.headers

    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers

    assert simple.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = [h.strip().lower() for h in simple.headers["Access-Control-Expose-Headers"].split(",")]
    assert {"retry-after", "x-request-id"} <= set(exposed)
    assert "Access-Control-Allow-Origin" not in foreign.headers
    # Only the methods the API uses.
    assert put.status_code == 400


async def test_no_cors_at_all_without_origins() -> None:
    app = _app(origins=[])
    assert not [m for m in app.user_middleware if m.cls.__name__ == "CORSMiddleware"]
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/things", headers={"Origin": ALLOWED})
        preflight = await client.options(
            "/api/things", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
        )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in preflight.headers


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ('["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
        ("https://a.example, https://b.example/", ["https://a.example", "https://b.example"]),
        ("", []),
    ],
)
def test_cors_origins_are_read_as_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("FREQFLEET_CORS_ORIGINS", value)
    assert CommonSettings().cors_origins == origins


def test_cors_origins_default_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREQFLEET_CORS_ORIGINS", raising=False)
    assert CommonSettings().cors_origins == []
