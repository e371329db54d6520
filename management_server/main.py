"""The management server's FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from management_server import db
from management_server.bus.relay import OutboxRelay
from management_server.config import ManagementSettings, get_settings
from management_server.events.dispatcher import create_event_consumer
from management_server.security.passwords import build_hasher
from shared.health import health_router
from shared.http import install_http_plumbing
from shared.logging import configure_logging, get_logger
from shared.redis import create_redis

log = get_logger(__name__)


def create_app(settings: ManagementSettings | None = None) -> FastAPI:
    """Build the app; engines and clients are made in the lifespan, not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.create_engine(settings)
        redis = create_redis(settings.redis_url.get_secret_value())
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = db.create_sessionmaker(engine)
        app.state.redis = redis
        app.state.password_hasher = build_hasher(settings)

        async def redis_ping() -> None:
            await redis.ping()

        app.state.readiness_checks = {"database": lambda: db.ping(engine), "redis": redis_ping}
        relay = OutboxRelay(engine, redis)
        app.state.outbox_relay = relay
        relay.start()
        events = create_event_consumer(
            settings.redis_url.get_secret_value(), redis, app.state.sessionmaker, str(settings.management_port)
        )
        app.state.event_consumer = events
        events.start()
        log.info("management server started", env=settings.env.value)
        try:
            yield
        finally:
            await events.stop()
            await relay.stop()
            await redis.aclose()
            await engine.dispose()
            log.info("management server stopped")

    app = FastAPI(
        title="Freqfleet management server",
        version="0.1.0",
        summary="Users, bots, strategies, FreqAI models, analytics and audit for fleets of Freqtrade bots.",
        lifespan=lifespan,
    )
    install_http_plumbing(app, CollectorRegistry())
    app.include_router(health_router("management"))
    return app


def run() -> None:
    """Serve the app with uvicorn (``freqfleet management``)."""
    import uvicorn

    settings = get_settings()
    configure_logging("management", settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.management_host,
        port=settings.management_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
