"""The trading gateway's FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.bus import Publisher
from shared.health import health_router
from shared.http import install_http_plumbing
from shared.logging import configure_logging, get_logger
from shared.redis import create_redis
from shared.security_headers import SecurityHeadersMiddleware, install_cors
from shared.settings import Environment
from trading_gateway.config import GatewaySettings, get_settings
from trading_gateway.heartbeat.service import Heartbeat

log = get_logger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app; the data folder and the Redis client are made in the lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.gateway_data_dir.mkdir(parents=True, exist_ok=True)
        redis = create_redis(settings.redis_url.get_secret_value())
        app.state.settings = settings
        app.state.redis = redis

        async def redis_ping() -> None:
            await redis.ping()

        app.state.readiness_checks = {"redis": redis_ping}
        heartbeat = Heartbeat(settings, Publisher(redis))
        app.state.heartbeat = heartbeat
        heartbeat.start()
        log.info("gateway started", gateway_id=settings.gateway_id, data_dir=str(settings.gateway_data_dir))
        try:
            yield
        finally:
            await heartbeat.stop()
            await redis.aclose()
            log.info("gateway stopped", gateway_id=settings.gateway_id)

    app = FastAPI(
        title="Freqfleet trading gateway",
        version="0.1.0",
        summary="Runs Freqtrade bots on this host, reports what they do, serves MCP for AI agents.",
        lifespan=lifespan,
    )
    install_cors(app, settings.cors_origins)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.env is Environment.production)
    install_http_plumbing(app, CollectorRegistry())
    app.include_router(health_router("gateway"))
    return app


def run() -> None:
    """Serve the app with uvicorn (``freqfleet gateway``)."""
    import uvicorn

    settings = get_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
