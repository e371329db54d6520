"""The real ccxt library (async, as Freqtrade uses it) against the simulator, configured by
``shared.exchange.render_exchange_section``: markets, paged history, book, tickers, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import httpx
import pytest
import pytest_asyncio
from ccxt.base.errors import BadSymbol, OperationFailed, RequestTimeout

from shared.exchange import render_exchange_section
from shared.timeframes import DAY_MS, MINUTE_MS
from tests.exchange_simulator.conftest import PAIRS


@pytest_asyncio.fixture(loop_scope="session")
async def exchange(sim: httpx.AsyncClient) -> AsyncIterator[Any]:
    section = render_exchange_section("simulator", PAIRS, simulator_url=str(sim.base_url))
    client = ccxt_async.binance(section["ccxt_async_config"])
    try:
        yield client
    finally:
        await client.close()


async def _stats(sim: httpx.AsyncClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await sim.get("/_sim/stats")).json()
    return stats


async def test_load_markets_reads_exchange_info_only(exchange: Any, sim: httpx.AsyncClient) -> None:
    markets = await exchange.load_markets()
    assert sorted(markets) == sorted(PAIRS)
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["type"]) == ("BTCUSDT", "BTC", "USDT", "spot")
    assert btc["active"] is True
    assert btc["spot"] is True
    assert btc["precision"]["price"] == 0.01
    assert btc["precision"]["amount"] == 0.00001
    assert btc["limits"]["cost"]["min"] == 5.0
    assert btc["limits"]["amount"]["min"] == 0.00001
    doge = markets["DOGE/USDT"]
    assert doge["precision"]["price"] == 0.00001
    assert doge["precision"]["amount"] == 1.0
    # ccxt asked the spot API only: no futures hosts, no wallet (sapi) endpoints.
    assert set((await _stats(sim))["endpoints"]) == {"/api/v3/exchangeInfo"}


async def test_fetch_ohlcv_pages_through_a_long_range(exchange: Any, sim: httpx.AsyncClient) -> None:
    await exchange.load_markets()
    since = exchange.milliseconds() - 10 * DAY_MS
    candles: list[list[float]] = []
    cursor = since
    while True:  # the way Freqtrade pages: from the last candle on, 1000 at a time
        page = await exchange.fetch_ohlcv("ETH/USDT", "5m", since=cursor, limit=1000)
        if not page:
            break
        candles += page
        cursor = int(page[-1][0]) + 5 * MINUTE_MS
        if len(page) < 1000:
            break
    pages = (await _stats(sim))["endpoints"]["/api/v3/klines"]["count"]
    assert pages == 3  # 2880 candles: 1000 + 1000 + 880 (the last page ends at the open candle)
    times = [int(c[0]) for c in candles]
    assert times == list(range(times[0], times[-1] + 1, 5 * MINUTE_MS))  # contiguous, no duplicates
    assert times[0] - since < 5 * MINUTE_MS
    assert exchange.milliseconds() - times[-1] < 5 * MINUTE_MS + 2000  # up to the candle in progress
    assert all(c[3] <= min(c[1], c[4]) <= max(c[1], c[4]) <= c[2] for c in candles)
    # ccxt's own pagination gives the same candles.
    paginated = await exchange.fetch_ohlcv(
        "ETH/USDT", "5m", since=times[0], params={"paginate": True, "until": times[-2]}
    )
    assert [c[:5] for c in paginated] == [c[:5] for c in candles[: len(paginated)]]
    assert len(paginated) >= len(candles) - 2


async def test_book_tickers_and_candles_agree(exchange: Any) -> None:
    await exchange.load_markets()
    # The market ticks once a second: read everything within one second. ccxt's client-side rate
    # limiter would space these calls out over seconds (Binance weighs all tickers 80), so it is off.
    exchange.enableRateLimit = False
    for _ in range(20):
        book = await exchange.fetch_order_book("BTC/USDT", 5)
        tickers = await exchange.fetch_tickers()
        one = await exchange.fetch_ticker("BTC/USDT")
        candle = (await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=1))[-1]
        hourly = (await exchange.fetch_ohlcv("BTC/USDT", "1h", limit=1))[-1]
        again = await exchange.fetch_order_book("BTC/USDT", 5)
        if book["nonce"] == again["nonce"] == one["timestamp"] == tickers["BTC/USDT"]["timestamp"]:
            break
    else:
        pytest.fail("could not read the market within one second")
    mid = (book["bids"][0][0] + book["asks"][0][0]) / 2
    assert one["last"] == pytest.approx(mid, abs=1e-9)
    assert candle[4] == hourly[4] == one["last"] == tickers["BTC/USDT"]["last"]
    assert (one["bid"], one["ask"]) == (book["bids"][0][0], book["asks"][0][0])
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert sorted(tickers) == sorted(PAIRS)
    assert all(t["last"] > 0 and t["quoteVolume"] > 0 and t["bid"] < t["last"] < t["ask"] for t in tickers.values())
    some = await exchange.fetch_tickers(["ETH/USDT", "XRP/USDT"])
    assert sorted(some) == ["ETH/USDT", "XRP/USDT"]
    assert abs(await exchange.fetch_time() - exchange.milliseconds()) < 2000


async def test_ccxt_raises_its_usual_exceptions(exchange: Any, sim: httpx.AsyncClient) -> None:
    await exchange.load_markets()
    with pytest.raises(BadSymbol):
        await exchange.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1m"})
    await sim.post("/_sim/outage", json={"seconds": 30})
    with pytest.raises(OperationFailed, match="-1001"):  # Freqtrade retries these as temporary errors
        await exchange.fetch_order_book("BTC/USDT")
    await sim.post("/_sim/outage", json={"seconds": 30, "mode": "timeout"})
    exchange.timeout = 500
    with pytest.raises(RequestTimeout):
        await exchange.fetch_ticker("BTC/USDT")
    await sim.delete("/_sim/outage")
    exchange.timeout = 10_000
    assert (await exchange.fetch_ticker("BTC/USDT"))["last"] > 0
