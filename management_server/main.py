"""The management server's FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from management_server import db
from management_server.analytics.cache import AnalyticsCache
from management_server.analytics.risk import RiskGuard
from management_server.analytics.router import router as analytics_router
from management_server.analytics.trades import TradeEffects, TradeSync
from management_server.audit.router import router as audit_router
from management_server.audit.service import AuditLog
from management_server.auth.browser import router as browser_session_router
from management_server.auth.keeper import RevocationKeeper
from management_server.auth.principals import PrincipalFacts
from management_server.auth.router import jwks_router
from management_server.auth.router import router as auth_router
from management_server.auth.service import AuthService
from management_server.botdb.service import Provisioner, rehome
from management_server.bots.drain import Drainer
from management_server.bots.emergency_router import router as emergency_router
from management_server.bots.failover import Failover
from management_server.bots.markets import Markets
from management_server.bots.reconcile import Reconciler
from management_server.bots.router import router as bots_router
from management_server.bus.relay import OutboxRelay
from management_server.bus.router import router as command_keys_router
from management_server.bus.signing import command_signer, load_command_keys
from management_server.config import ManagementSettings, get_settings
from management_server.credentials.router import router as credentials_router
from management_server.dashboard.compression import DashboardCompression
from management_server.dashboard.live import LiveFeed, track
from management_server.dashboard.model_feed import ModelFeed
from management_server.dashboard.router import STATIC as DASHBOARD_STATIC
from management_server.dashboard.router import page_router as dashboard_page_router
from management_server.dashboard.router import router as dashboard_router
from management_server.elected import EVENTS_CONSUMER_LOCK, Elected
from management_server.errors import DATABASE_AWAY, database_away
from management_server.events.dispatcher import create_event_consumer
from management_server.freqai.deploy import ModelRegistry
from management_server.freqai.router import bots_router as model_bots_router
from management_server.freqai.router import keys_router as model_keys_router
from management_server.freqai.router import router as models_router
from management_server.freqai.signing import load_signing_keys
from management_server.freqai.store import ModelStore
from management_server.freqai.tasks import TrainQueue
from management_server.freqai.upload import UPLOAD_SLACK
from management_server.gateways.client import GatewayClient
from management_server.gateways.router import router as gateways_router
from management_server.gateways.signatures import EventSignatures
from management_server.monitoring import create_monitor
from management_server.security.crypto import MasterKeys
from management_server.security.keys import KeyRing
from management_server.security.login_throttle import LoginThrottle, LoginThrottled
from management_server.security.passwords import build_hasher
from management_server.security.ratelimit import (
    RateLimiter,
    RateLimitMiddleware,
    enforce_user_limit,
    too_many_requests_detail,
)
from management_server.strategies.router import router as strategies_router
from management_server.strategies.tasks import CheckQueue
from management_server.users.router import router as users_router
from management_server.worker import create_celery
from shared.auth import RevocationStore, StaticKeySource, TokenVerifier
from shared.health import health_router
from shared.http import install_http_plumbing, serve, serve_workers
from shared.logging import configure_logging, get_logger
from shared.metrics import install as install_metrics
from shared.redis import create_redis
from shared.security_headers import install_cors
from shared.settings import Environment

log = get_logger(__name__)


def create_app(settings: ManagementSettings | None = None) -> FastAPI:
    """Build the app; engines and clients are made in the lifespan, not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is built is closed in reverse order: each stop is pushed on the stack as its resource is made.
        async with AsyncExitStack() as stack:
            engine = db.create_engine(settings)
            stack.push_async_callback(engine.dispose)
            redis = create_redis(settings.redis_url.get_secret_value())
            stack.push_async_callback(redis.aclose)
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = db.create_sessionmaker(engine)
            app.state.redis = redis
            app.state.password_hasher = build_hasher(settings)
            keys = load_keys(settings)
            revocations = RevocationStore(redis)
            app.state.keys = keys
            app.state.revocations = revocations
            # No revocation store in the verifier: get_principal asks it itself, and reads the database when Redis
            # does not answer (the user's token versions, the personal token's row are the source of truth).
            app.state.token_verifier = TokenVerifier(
                StaticKeySource(keys.public_keys()), issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )
            app.state.auth = AuthService(settings, keys, app.state.password_hasher, revocations)
            app.state.principal_facts = PrincipalFacts()
            app.state.login_throttle = LoginThrottle(redis, settings)
            if settings.rate_limit_enabled:
                app.state.rate_limiter = RateLimiter(redis, settings)
                app.state.enforce_user_limit = enforce_user_limit
            app.state.audit = AuditLog(app.state.sessionmaker)
            app.state.master_keys = (
                MasterKeys.parse(settings.master_keys.get_secret_value())
                if settings.master_keys is not None
                else MasterKeys.from_file(settings.data_dir / "master.keys")
            )
            app.state.bot_databases = Provisioner.from_settings(settings)  # FREQFLEET_BOT_DB=postgres
            if app.state.bot_databases is not None:
                async with app.state.sessionmaker.begin() as session:
                    await rehome(session, app.state.bot_databases)
            await _sync_revocations(app)
            # The dashboard's live feed: bots changed by any session of this app reach the pages that show them.
            live_feed = LiveFeed(redis, app.state.sessionmaker)
            app.state.live_feed = live_feed
            track(app.state.sessionmaker, live_feed)
            live_feed.start()
            stack.push_async_callback(live_feed.stop)

            async def redis_ping() -> None:
                await redis.ping()

            app.state.readiness_checks = {"database": lambda: db.ping(engine), "redis": redis_ping}
            # The background tasks' own pool: a burst of requests can't starve them, nor they the requests.
            background_engine = db.create_engine(settings, background=True)
            stack.push_async_callback(background_engine.dispose)
            background = db.create_sessionmaker(background_engine)
            track(background, live_feed)  # the events consumer's changes (gateways' reports) above all
            # The token revocations, written to Redis at start, again whenever Redis loses them (a FLUSHALL, a failover)
            revocation_keeper = RevocationKeeper(app.state.auth, background)
            app.state.revocation_keeper = revocation_keeper
            revocation_keeper.start()
            stack.push_async_callback(revocation_keeper.stop)
            model_feed = ModelFeed(background_engine, app.state.sessionmaker, live_feed)  # the models page's rows
            model_feed.start()
            stack.push_async_callback(model_feed.stop)
            app.state.command_keys = load_command_keys(settings)
            relay = OutboxRelay(
                background_engine,
                redis,
                signer=command_signer(app.state.command_keys),
                stream_retention=settings.stream_retention,
                answer_within=settings.command_answer_within,
                give_up_after=settings.command_max_age,
            )
            app.state.outbox_relay = relay
            relay.start()
            stack.push_async_callback(relay.stop)
            # analytics and the risk guard: trades recorded from events (or filled in from gateways) are checked
            # against the drawdown limits and make cached answers stale.
            app.state.analytics_cache = AnalyticsCache(redis, settings.analytics_cache_seconds)
            app.state.risk_guard = RiskGuard(settings, app.state.master_keys, app.state.audit)
            trade_effects = TradeEffects(app.state.analytics_cache, app.state.risk_guard)
            markets = Markets(settings.check_simulator_url)  # pairs refused that the exchange does not trade
            app.state.markets = markets
            stack.push_async_callback(markets.aclose)
            gateway_client = GatewayClient(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
            app.state.gateway_client = gateway_client
            stack.push_async_callback(gateway_client.aclose)
            trade_sync = TradeSync(background, gateway_client, trade_effects, settings.trade_sync_interval)
            app.state.trade_sync = trade_sync
            trade_sync.start()
            monitor = create_monitor(registry, redis, background, retention=settings.stream_retention)
            app.state.metrics_monitor = monitor
            monitor.start()
            stack.push_async_callback(monitor.stop)
            stack.push_async_callback(trade_sync.stop)  # stops before the monitor
            # Only what enrolled gateways signed is applied; enrolling or revoking takes effect at once in this
            # process, within the signatures' cache time (5 s) in the other management processes.
            app.state.event_signatures = EventSignatures(background)
            # One management process at a time consumes the events (in the order gateways wrote them).
            events = Elected(
                background_engine,
                "events consumer",
                EVENTS_CONSUMER_LOCK,
                lambda: create_event_consumer(
                    settings.redis_url.get_secret_value(),
                    redis,
                    background,
                    str(settings.management_port),
                    trade_effects=trade_effects,
                    signatures=app.state.event_signatures,
                ),
            )
            app.state.event_consumer = events
            events.start()
            stack.push_async_callback(events.stop)
            # Strategy checks go to the Celery workers through the same Redis; this app only sends tasks.
            app.state.celery = create_celery(settings, results=False)
            check_queue = CheckQueue(app.state.celery)
            app.state.check_queue = check_queue
            stack.callback(check_queue.close)
            # FreqAI models: trainings go to the workers; bundles are kept encrypted and signed when sent.
            train_queue = TrainQueue(create_celery(settings, results=False))  # its own producer
            app.state.train_queue = train_queue
            stack.callback(train_queue.close)
            app.state.model_registry = ModelRegistry(
                ModelStore(settings.model_store, app.state.master_keys),
                load_signing_keys(settings),
                redis,
                settings.model_inline_max_bytes,
            )
            # What runs converges to what should: each gateway's inventory against every bot's desired state.
            reconciler = Reconciler(
                settings,
                background,
                app.state.master_keys,
                app.state.audit,
                app.state.model_registry,
                on_commands=relay.wake,
            )
            app.state.reconciler = reconciler
            reconciler.start()
            stack.push_async_callback(reconciler.stop)  # first to stop: no command is sent during shutdown
            # Bots whose gateway's lease on them ended run again on a live gateway, with their trades; drained
            # gateways' bots moved off one at a time (POST /gateways/{id}/drain).
            movers = (
                settings,
                background,
                app.state.master_keys,
                app.state.audit,
                app.state.bot_databases,
                app.state.model_registry,
            )
            failover = Failover(*movers, on_commands=relay.wake, redis=redis)
            app.state.failover = failover
            failover.start()
            stack.push_async_callback(failover.stop)
            drainer = Drainer(*movers, on_commands=relay.wake)
            app.state.drainer = drainer
            drainer.start()
            stack.push_async_callback(drainer.stop)
            log.info("management server started", env=settings.env.value)
            yield
        log.info("management server stopped")

    app = FastAPI(
        title="Freqfleet management server",
        version="0.1.0",
        summary="Users, bots, strategies, FreqAI models, analytics and audit for fleets of Freqtrade bots.",
        lifespan=lifespan,
    )
    app.add_middleware(RateLimitMiddleware)
    app.add_middleware(DashboardCompression)
    install_cors(app, settings.cors_origins)
    registry = CollectorRegistry()
    install_http_plumbing(
        app,
        registry,
        hsts=settings.env is Environment.production,
        max_body_bytes=settings.max_body_bytes,
        # The model upload streams to disk and checks its own, larger limit.
        body_limits={"/api/v1/models/upload": settings.model_max_upload_bytes + UPLOAD_SLACK},
        unavailable=lambda exc: DATABASE_AWAY if database_away(exc) else None,  # a failover: 503, not 500
    )
    install_metrics(registry)
    app.add_exception_handler(LoginThrottled, _login_throttled)
    app.include_router(health_router("management"))
    app.include_router(jwks_router)
    app.include_router(command_keys_router)
    app.include_router(dashboard_page_router)
    app.include_router(dashboard_router)
    app.mount("/ui", StaticFiles(directory=DASHBOARD_STATIC), name="dashboard")
    app.include_router(auth_router)
    app.include_router(browser_session_router)
    app.include_router(users_router)
    app.include_router(audit_router)
    app.include_router(strategies_router)
    app.include_router(credentials_router)
    app.include_router(bots_router)
    app.include_router(gateways_router)
    app.include_router(emergency_router)
    app.include_router(analytics_router)
    app.include_router(models_router)
    app.include_router(model_bots_router)
    app.include_router(model_keys_router)
    return app


async def _login_throttled(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LoginThrottled)
    return JSONResponse(
        status_code=429,
        content={"detail": too_many_requests_detail(exc.retry_after)},
        headers={"Retry-After": str(exc.retry_after)},
    )


def load_keys(settings: ManagementSettings) -> KeyRing:
    return KeyRing.configured(settings.jwt_private_keys, settings.data_dir / "keys", "FREQFLEET_JWT_PRIVATE_KEYS")


async def _sync_revocations(app: FastAPI) -> None:
    """Redis may have restarted empty: put the database's revocations back before serving."""
    try:
        async with app.state.sessionmaker() as session:
            await app.state.auth.sync_revocations(session)
    except Exception as exc:  # the database or Redis is down: readiness says so; sync at next start
        log.warning("could not sync token revocations to redis", error=f"{type(exc).__name__}: {exc}")


def run() -> None:
    """Serve the app with uvicorn (``freqfleet management``): in this process, or in
    ``FREQFLEET_MANAGEMENT_WORKERS`` processes sharing the port (each builds its app with :func:`worker_app`)."""
    settings = get_settings()
    configure_logging("management", settings.log_level, settings.log_format)
    if settings.management_workers == 1:
        serve(create_app(settings), settings.management_host, settings.management_port, settings.trusted_proxies)
        return
    serve_workers(
        "management_server.main:worker_app",
        settings.management_host,
        settings.management_port,
        settings.management_workers,
        settings.data_dir,
        settings.trusted_proxies,
    )


def worker_app() -> FastAPI:
    """The app of one of several worker processes (uvicorn calls this in each)."""
    import gc

    settings = get_settings()
    configure_logging("management", settings.log_level, settings.log_format)
    app = create_app(settings)
    gc.freeze()  # as serve() does: what import made stays out of the collector's way
    return app
