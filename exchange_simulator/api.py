"""The Binance spot REST endpoints ccxt and Freqtrade use, under ``/api/v3``.

Parameters are read the way Binance reads them and bad ones are answered the way Binance answers
them (HTTP 400, ``{"code": -11xx, "msg": ...}``), so ccxt raises the exception it raises against
the real exchange (``BadSymbol``, ``BadRequest``, ...).
"""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Request, Response
from starlette.datastructures import QueryParams

from exchange_simulator import binance
from exchange_simulator.binance import BinanceError
from exchange_simulator.book import DEFAULT_LEVELS, MAX_LEVELS, OrderBook, order_book, round_price
from exchange_simulator.market import Market
from exchange_simulator.markets import MarketSpec
from shared import timeframes

PREFIX = "/api/v3"
OWN_PREFIXES = ("/_sim", "/health", "/docs", "/redoc", "/openapi.json")  # not the exchange's paths
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _json(value: object) -> Response:
    return Response(content=binance.dumps(value), media_type="application/json")


def _market(request: Request) -> Market:
    market: Market = request.app.state.market
    return market


def _int(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw == "":
        raise BinanceError(400, -1105, f"Parameter '{name}' was empty.")
    if not _INTEGER.match(raw):
        raise binance.illegal(name, "^[0-9]{1,20}$")
    return int(raw)


def _limit(params: QueryParams, default: int, maximum: int) -> int:
    limit = _int(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise binance.not_valid("limit")
    return min(limit, maximum)  # Binance caps larger limits


def _symbol(market: Market, params: QueryParams, required: bool = True) -> MarketSpec | None:
    raw = params.get("symbol")
    if raw is None or raw == "":
        if required:
            raise binance.mandatory("symbol")
        return None
    spec = market.specs.get(raw.upper())
    if spec is None:
        raise binance.invalid_symbol()
    return spec


def _symbols(market: Market, params: QueryParams) -> list[MarketSpec]:
    """``symbol=X``, ``symbols=["X","Y"]`` (JSON, as ccxt sends it) or, without both, every market."""
    one = _symbol(market, params, required=False)
    raw = params.get("symbols")
    if one is not None and raw is not None:
        raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
    if one is not None:
        return [one]
    if raw is None:
        return list(market.specs.values())
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise binance.illegal("symbols", '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$')
    specs = [market.specs.get(n.upper()) for n in names]
    if any(s is None for s in specs):
        raise binance.invalid_symbol()
    return [s for s in specs if s is not None]


def _book(market: Market, spec: MarketSpec, now_ms: int, levels: int) -> OrderBook:
    return order_book(spec, market.seed, market.last_price(spec.id, now_ms), now_ms, levels)


@router.get("/ping")
async def ping() -> Response:
    return _json({})


@router.get("/time")
async def server_time(request: Request) -> Response:
    return _json({"serverTime": int(_market(request).clock() * 1000)})


@router.get("/exchangeInfo")
async def exchange_info(request: Request) -> Response:
    market = _market(request)
    specs = _symbols(market, request.query_params)
    return _json(binance.exchange_info(specs, int(market.clock() * 1000), request.app.state.limits.limit))


@router.get("/klines")
@router.get("/uiKlines")
async def klines(request: Request) -> Response:
    market = _market(request)
    params = request.query_params
    spec = _symbol(market, params)
    assert spec is not None
    interval = params.get("interval")
    if not interval:
        raise binance.mandatory("interval")
    if interval not in timeframes.INTERVALS:
        raise BinanceError(400, -1120, "Invalid interval.")
    start, end = _int(params, "startTime"), _int(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    limit = _limit(params, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
    now = market.now_ms()
    candles = market.klines(spec.id, interval, start, end, limit, now)
    body = binance.klines_json(spec, interval, candles, now, request.app.state.kline_rows, market.versions[spec.id])
    return Response(content=body, media_type="application/json")


@router.get("/depth")
async def depth(request: Request) -> Response:
    market = _market(request)
    params = request.query_params
    spec = _symbol(market, params)
    assert spec is not None
    levels = _limit(params, DEFAULT_LEVELS, MAX_LEVELS)
    return _json(binance.depth(_book(market, spec, market.now_ms(), levels)))


def _ticker_type(params: QueryParams) -> bool:
    kind = params.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise BinanceError(400, -1139, "Invalid ticker type.")
    return kind == "FULL"


@router.get("/ticker/24hr")
async def ticker_24hr(request: Request) -> Response:
    market = _market(request)
    params = request.query_params
    full = _ticker_type(params)
    specs = _symbols(market, params)
    now = market.now_ms()
    bodies = [
        binance.ticker_24h(
            spec, market.seed, market.ticker_24h(spec.id, now), _book(market, spec, now, 1), now, full=full
        )
        for spec in specs
    ]
    return _json(bodies[0] if "symbol" in params else bodies)


@router.get("/ticker/price")
async def ticker_price(request: Request) -> Response:
    market = _market(request)
    params = request.query_params
    specs = _symbols(market, params)
    now = market.now_ms()
    bodies = [{"symbol": s.id, "price": f"{round_price(s, market.last_price(s.id, now)):.8f}"} for s in specs]
    return _json(bodies[0] if "symbol" in params else bodies)


@router.get("/ticker/bookTicker")
async def book_ticker(request: Request) -> Response:
    market = _market(request)
    params = request.query_params
    specs = _symbols(market, params)
    now = market.now_ms()
    bodies = [binance.book_ticker(s, _book(market, s, now, 1)) for s in specs]
    return _json(bodies[0] if "symbol" in params else bodies)


ENDPOINTS = frozenset(
    f"{PREFIX}/{p}"
    for p in (
        "ping",
        "time",
        "exchangeInfo",
        "klines",
        "uiKlines",
        "depth",
        "ticker/24hr",
        "ticker/price",
        "ticker/bookTicker",
    )
)
