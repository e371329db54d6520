"""The management server over real HTTP: health, readiness, request ids, metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from pydantic import SecretStr

from freqfleet.embedded import EmbeddedPostgres
from management_server.config import ManagementSettings
from management_server.main import create_app
from shared.settings import Environment
from tests.helpers import async_wait_for, serve


async def test_live_and_ready_answer_200(management_settings: ManagementSettings) -> None:
    async with serve(create_app(management_settings)) as url, httpx.AsyncClient(base_url=url) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert live.json() == {"status": "ok", "service": "management"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_request_id_is_taken_returned_or_made(management_settings: ManagementSettings) -> None:
    async with serve(create_app(management_settings)) as url, httpx.AsyncClient(base_url=url) as client:
        given = await client.get("/health/live", headers={"X-Request-ID": "req-42.abc"})
        made = await client.get("/health/live")
        forged = await client.get("/health/live", headers={"X-Request-ID": "a b\tinjected"})
    assert given.headers["X-Request-ID"] == "req-42.abc"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    # An id that could forge a log line is replaced by a fresh one.
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])


async def test_unknown_route_is_a_json_404(management_settings: ManagementSettings) -> None:
    async with serve(create_app(management_settings)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_metrics_count_requests_by_route(management_settings: ManagementSettings) -> None:
    async with serve(create_app(management_settings)) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):
            await client.get("/health/live")
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    line = next(
        ln
        for ln in metrics.text.splitlines()
        if ln.startswith("http_requests_total{") and 'handler="/health/live"' in ln and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 3.0
    assert "http_request_duration_seconds_bucket" in metrics.text


async def test_ready_turns_503_while_the_database_is_down(tmp_path: Path, own_server_dir: Path, redis_url: str) -> None:
    pg = EmbeddedPostgres(own_server_dir)
    pg.start()
    settings = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        database_url=SecretStr(pg.url("postgres")),
        redis_url=SecretStr(redis_url),
    )
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/health/ready")).status_code == 200

            pg.stop()
            down = await client.get("/health/ready")
            assert down.status_code == 503
            body = down.json()
            assert body["status"] == "unavailable"
            assert body["checks"]["redis"] == "ok"
            assert body["checks"]["database"].startswith("unavailable: ")
            assert "password" not in down.text.lower()
            # Liveness does not depend on the database.
            assert (await client.get("/health/live")).status_code == 200

            pg.start()

            async def ready_again() -> bool:
                return (await client.get("/health/ready")).status_code == 200

            await async_wait_for(ready_again, timeout=30, what="readiness after the database returned")
    finally:
        pg.stop()


async def test_ready_turns_503_when_redis_is_unreachable(database_url: str, tmp_path: Path) -> None:
    from tests.helpers import free_port

    settings = ManagementSettings(
        env=Environment.test,
        data_dir=tmp_path,
        database_url=SecretStr(database_url),
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
    )
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["redis"].startswith("unavailable: ")
