"""The trading gateway's FastAPI app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.auth import RevocationStore, TokenVerifier
from shared.auth.verifier import gateway_audience
from shared.bus.consumer import ConsumerConfig, StreamConsumer
from shared.bus.generations import GenerationTracker
from shared.bus.publisher import Publisher
from shared.bus.receipts import receipts_stream
from shared.bus.streams import commands_stream, gateway_group
from shared.health import health_router
from shared.http import install_http_plumbing
from shared.logging import configure_logging, get_logger
from shared.metrics import install as install_metrics
from shared.redis import create_redis
from shared.security_headers import install_cors
from shared.settings import Environment
from trading_gateway.auth import JWKS_CACHE, CachedJwksKeySource, GatewayAuth
from trading_gateway.bus.applied import APPLIED_FILE, AppliedCommands
from trading_gateway.bus.commands import CommandHandler
from trading_gateway.bus.events import OUTBOX_FILE, EventPublisher
from trading_gateway.bus.receipts import RECEIPTS_FILE, AwaitingReceipts
from trading_gateway.bus.signatures import COMMAND_KEYS_CACHE, COMMAND_KEYS_PATH, CommandSignatures
from trading_gateway.config import GatewaySettings, get_settings
from trading_gateway.fleet.router import router as fleet_router
from trading_gateway.fleet.service import Fleet
from trading_gateway.freqai.keys import MODEL_KEYS_CACHE, MODEL_KEYS_PATH, ModelKeySource
from trading_gateway.freqai.router import router as models_router
from trading_gateway.freqai.service import ModelService
from trading_gateway.heartbeat.service import Heartbeat
from trading_gateway.identity import load_or_create
from trading_gateway.mcp.server import McpService
from trading_gateway.mcp.transports import install as install_mcp
from trading_gateway.monitoring import create_monitor

log = get_logger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app; the data folder and the Redis client are made in the lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = settings.gateway_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = settings.redis_url.get_secret_value()
        async with AsyncExitStack() as stack:
            redis = create_redis(redis_url)
            stack.push_async_callback(redis.aclose)
            # Events and token checks get clients of their own that give up fast: with Redis away, events
            # go to the outbox and the local kill switch still answers (a revocation check waits at most
            # 0.5 s for a Redis that hangs: a partition must not slow the kill switch by seconds).
            events_redis = create_redis(redis_url, socket_timeout=3.0, retries=1)
            stack.push_async_callback(events_redis.aclose)
            auth_redis = create_redis(redis_url, socket_timeout=0.5, retries=0)
            stack.push_async_callback(auth_redis.aclose)
            app.state.settings = settings
            app.state.redis = redis

            async def redis_ping() -> None:
                await redis.ping()

            app.state.readiness_checks = {"redis": redis_ping}

            keys = CachedJwksKeySource(settings.management_url + "/.well-known/jwks.json", data_dir / JWKS_CACHE)
            stack.push_async_callback(keys.client.aclose)
            prefetch = asyncio.create_task(keys.refresh())  # fills the on-disk copy; not waited for
            stack.callback(prefetch.cancel)
            # Users' and service accounts' tokens, and the management server's own tokens for this gateway only.
            iss, aud = (
                settings.jwt_issuer,
                [settings.jwt_audience, gateway_audience(settings.jwt_audience, settings.gateway_id)],
            )
            app.state.gateway_auth = GatewayAuth(
                verifier=TokenVerifier(keys, issuer=iss, audience=aud, revocations=RevocationStore(auth_redis)),
                offline=TokenVerifier(keys, issuer=iss, audience=aud),
                keys=keys,
            )

            # What the gateway reports is signed with its identity: the management server acts only on entries
            # of enrolled gateways (freqfleet gateways enroll).
            identity = load_or_create(data_dir, settings.gateway_id)
            app.state.identity = identity
            signer = identity.event_signer()
            # kept until the management server confirms it (bus/receipts.py): an event Redis lost is sent again
            receipts = AwaitingReceipts(
                data_dir / RECEIPTS_FILE,
                receipts_stream(settings.gateway_id),
                within=settings.event_receipt_within,
                keep_for=settings.events_max_age,
            )
            stack.callback(receipts.close)
            events = EventPublisher(
                Publisher(events_redis, signer=signer, retention=settings.stream_retention),
                data_dir / OUTBOX_FILE,
                receipts=receipts,
            )
            events.start()
            stack.push_async_callback(events.stop)
            # FreqAI models: bundles signed by the management server, verified with its published keys.
            model_keys = ModelKeySource(
                settings.model_keys_url or settings.management_url + MODEL_KEYS_PATH, data_dir / MODEL_KEYS_CACHE
            )
            stack.push_async_callback(model_keys.client.aclose)
            models = ModelService(settings, events, keys=model_keys, redis=redis)
            fleet = Fleet(settings, events, models=models, identity=identity)
            app.state.fleet = fleet
            leases = fleet.use_leases(redis) if settings.lease_seconds > 0 else None
            if leases is not None and settings.stop_bots_on_shutdown:
                stack.push_async_callback(leases.release)  # last, once the fleet has stopped its bots
            await fleet.start()
            stack.push_async_callback(lambda: fleet.stop(stop_bots=settings.stop_bots_on_shutdown))
            if leases is not None:  # renewing from now on; stopped before the fleet stops
                leases.start()
                stack.push_async_callback(leases.stop)

            # MCP for AI agents (/mcp, /mcp/ws); stops before the fleet does.
            mcp = McpService(settings, fleet, app.state.gateway_auth, events)
            app.state.mcp = mcp
            await stack.enter_async_context(mcp.run())

            heartbeat = Heartbeat(
                settings,
                Publisher(redis, signer=signer, retention=settings.stream_retention),
                bots_running=fleet.bots_running,
                capacity=fleet.capacity,
                bots_by_state=fleet.bots_by_state,
                inventory=fleet.inventory,
                relay=None if fleet.relay is None else fleet.relay.summary,
            )
            app.state.heartbeat = heartbeat
            heartbeat.start()
            stack.push_async_callback(heartbeat.stop)

            monitor = create_monitor(registry, redis, fleet)  # gauges of /metrics: bots by state, its bus stream
            app.state.metrics_monitor = monitor
            monitor.start()
            stack.push_async_callback(monitor.stop)

            consumer_config = ConsumerConfig(
                stream=commands_stream(settings.gateway_id),
                group=gateway_group(settings.gateway_id),
                consumer=settings.gateway_id,  # stable: a restarted gateway resumes its own pending commands
                ack_per_batch=True,  # safe: what it applied is recorded on its disk first (bus/applied.py)
            )
            # the commands it applied and its answers, on its own disk: a copy is never applied twice, even after
            # Redis lost its data (a FLUSHALL, a failover), and is answered again (bus/applied.py)
            applied = AppliedCommands(data_dir / APPLIED_FILE)
            stack.callback(applied.close)
            handler = CommandHandler(
                fleet,
                events,
                GenerationTracker(redis, settings.gateway_id),
                max_deliveries=consumer_config.max_deliveries,
                answers=applied,
            )
            command_keys = CachedJwksKeySource(
                settings.command_keys_url or settings.management_url + COMMAND_KEYS_PATH, data_dir / COMMAND_KEYS_CACHE
            )
            stack.push_async_callback(command_keys.client.aclose)
            signatures = CommandSignatures(command_keys, settings.gateway_id, settings.command_max_age)
            consumer = StreamConsumer(
                redis_url,
                consumer_config,
                handler,
                applied,
                admit=signatures,
                on_duplicate=handler.answer_again,
                after_batch=handler.after_batch,  # the batch's answers, in one round trip
            )
            app.state.command_consumer = consumer
            consumer.start()
            stack.push_async_callback(consumer.stop)  # first to stop: no command is taken during shutdown
            log.info("gateway started", gateway_id=settings.gateway_id, data_dir=str(data_dir))
            try:
                yield
            finally:
                log.info("gateway stopping", gateway_id=settings.gateway_id)
        log.info("gateway stopped", gateway_id=settings.gateway_id)

    app = FastAPI(
        title="Freqfleet trading gateway",
        version="0.1.0",
        summary="Runs Freqtrade bots on this host, reports what they do, serves MCP for AI agents.",
        lifespan=lifespan,
    )
    install_cors(app, settings.cors_origins)
    registry = CollectorRegistry()
    install_http_plumbing(
        app, registry, hsts=settings.env is Environment.production, max_body_bytes=settings.max_body_bytes
    )
    install_metrics(registry)
    app.include_router(health_router("gateway"))
    app.include_router(fleet_router)
    app.include_router(models_router)
    install_mcp(app)
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
        ws_max_size=settings.mcp_max_message_bytes,  # a larger MCP frame is refused before it is buffered whole
    )
