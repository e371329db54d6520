"""The exchange simulator's app: Binance's public spot API, the ``/_sim`` control API, health."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from exchange_simulator import api, binance, control, limits
from exchange_simulator.config import SimulatorSettings, get_settings
from exchange_simulator.market import Market
from shared.health import health_router
from shared.http import serve
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


def _binance_error(error: binance.BinanceError) -> Response:
    return JSONResponse(status_code=error.status, content=error.body())


def create_app(settings: SimulatorSettings | None = None, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the app; the market (prices, overlays) and the control state are made in the lifespan.

    ``clock`` (seconds since the epoch) is the market's wall clock; tests may pass their own.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.market = Market(settings.simulator_pairs, settings.simulator_seed, clock)
        app.state.control = control.ControlState()
        app.state.kline_rows = binance.KlineRowCache()
        app.state.limits = limits.WeightLimits(settings.simulator_weight_limit, settings.simulator_ban_after, clock)
        log.info(
            "exchange simulator started",
            seed=settings.simulator_seed,
            pairs=settings.simulator_pairs,
            weight_limit=settings.simulator_weight_limit or "off",
        )
        try:
            yield
        finally:
            log.info("exchange simulator stopped")

    app = FastAPI(
        title="Freqfleet exchange simulator",
        version="0.1.0",
        summary="A Binance-compatible spot market with deterministic synthetic prices, for offline bots.",
        lifespan=lifespan,
    )
    app.add_middleware(limits.WeightLimitMiddleware)  # inside the traffic layer: its statistics count 429s and 418s
    app.add_middleware(control.TrafficMiddleware)

    @app.exception_handler(binance.BinanceError)
    async def on_binance_error(_: Request, exc: binance.BinanceError) -> Response:
        return _binance_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Our own paths answer FastAPI's {"detail": ...}; anything else is the exchange's.
        if request.url.path.startswith(api.OWN_PREFIXES) or exc.status_code not in (404, 405):
            return await http_exception_handler(request, exc)
        return _binance_error(binance.unsupported(request.method, request.url.path, exc.status_code))

    @app.exception_handler(Exception)
    async def on_unhandled_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", method=request.method, path=request.url.path)
        if request.url.path.startswith(api.OWN_PREFIXES):
            return JSONResponse(status_code=500, content={"detail": "Internal server error."})
        return _binance_error(
            binance.BinanceError(500, -1000, "An unknown error occurred while processing the request.")
        )

    app.include_router(api.router)
    app.include_router(control.router)
    app.include_router(limits.router)
    app.include_router(health_router("simulator"))
    return app


def run() -> None:
    """Serve the simulator with uvicorn (``freqfleet simulator``)."""
    settings = get_settings()
    configure_logging("simulator", settings.log_level, settings.log_format)
    serve(create_app(settings), settings.simulator_host, settings.simulator_port)
