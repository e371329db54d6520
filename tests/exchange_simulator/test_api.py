"""Binance's REST API over real HTTP: shapes, parameters, and Binance-shaped errors."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from exchange_simulator.app import create_app
from shared.timeframes import DAY_MS, MINUTE_MS
from tests.exchange_simulator.conftest import PAIRS, simulator_settings
from tests.helpers import serve


async def test_ping_time_and_exchange_info(sim: httpx.AsyncClient) -> None:
    assert (await sim.get("/api/v3/ping")).json() == {}
    before = int(time.time() * 1000)
    server_time = (await sim.get("/api/v3/time")).json()["serverTime"]
    assert before - 5 <= server_time <= int(time.time() * 1000) + 5
    info = (await sim.get("/api/v3/exchangeInfo")).json()
    assert info["timezone"] == "UTC"
    assert [s["symbol"] for s in info["symbols"]] == [p.replace("/", "") for p in PAIRS]
    btc = info["symbols"][0]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    assert btc["permissionSets"] == [["SPOT"]]
    assert btc["isSpotTradingAllowed"] is True
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    one = (await sim.get("/api/v3/exchangeInfo", params={"symbol": "DOGEUSDT"})).json()
    assert [s["symbol"] for s in one["symbols"]] == ["DOGEUSDT"]
    some = (await sim.get("/api/v3/exchangeInfo", params={"symbols": '["ETHUSDT","XRPUSDT"]'})).json()
    assert [s["symbol"] for s in some["symbols"]] == ["ETHUSDT", "XRPUSDT"]


async def test_klines_shape_and_paging(sim: httpx.AsyncClient) -> None:
    now = int(time.time() * 1000)
    rows = (await sim.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1h"})).json()
    assert len(rows) == 500  # Binance's default limit
    row = rows[-1]
    assert len(row) == 12
    open_ms, o, h, low, c, v, close_ms, quote_volume, trades, taker_base, taker_quote, ignore = row
    assert open_ms <= now < close_ms + 1
    assert close_ms == open_ms + 3_600_000 - 1
    for text in (o, h, low, c, v, quote_volume, taker_base, taker_quote):
        assert isinstance(text, str)
        assert len(text.split(".")[1]) == 8
    assert Decimal(o) % Decimal("0.01") == 0
    assert Decimal(v) % Decimal("0.00001") == 0
    assert Decimal(low) <= min(Decimal(o), Decimal(c)) <= max(Decimal(o), Decimal(c)) <= Decimal(h)
    assert isinstance(trades, int)
    assert ignore == "0"
    assert Decimal(taker_base) <= Decimal(v)

    start = now - 10 * DAY_MS
    page1 = (
        await sim.get(
            "/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "5m", "startTime": start, "limit": 1000}
        )
    ).json()
    assert len(page1) == 1000
    assert page1[0][0] >= start
    assert page1[0][0] - start < 5 * MINUTE_MS
    page2 = (
        await sim.get(
            "/api/v3/klines",
            params={"symbol": "ETHUSDT", "interval": "5m", "startTime": page1[-1][0] + 1, "limit": 1000},
        )
    ).json()
    assert page2[0][0] == page1[-1][0] + 5 * MINUTE_MS
    assert page2[0][1] == page1[-1][4]
    capped = (await sim.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m", "limit": 5000})).json()
    assert len(capped) == 1000  # Binance caps the limit
    window = (
        await sim.get(
            "/api/v3/klines",
            params={"symbol": "ETHUSDT", "interval": "5m", "startTime": page1[0][0], "endTime": page1[9][0]},
        )
    ).json()
    assert window == page1[:10]
    ui = (await sim.get("/api/v3/uiKlines", params={"symbol": "ETHUSDT", "interval": "1d", "limit": 3})).json()
    assert len(ui) == 3
    assert ui[-1][6] - ui[-1][0] == DAY_MS - 1


async def test_depth_and_tickers_agree(sim: httpx.AsyncClient) -> None:
    for _ in range(20):  # the live price ticks once a second: read all within one second
        book = (await sim.get("/api/v3/depth", params={"symbol": "SOLUSDT", "limit": 5})).json()
        ticker = (await sim.get("/api/v3/ticker/24hr", params={"symbol": "SOLUSDT"})).json()
        price = (await sim.get("/api/v3/ticker/price", params={"symbol": "SOLUSDT"})).json()
        best = (await sim.get("/api/v3/ticker/bookTicker", params={"symbol": "SOLUSDT"})).json()
        last = (await sim.get("/api/v3/klines", params={"symbol": "SOLUSDT", "interval": "1m", "limit": 1})).json()
        again = (await sim.get("/api/v3/depth", params={"symbol": "SOLUSDT", "limit": 5})).json()
        if book["lastUpdateId"] == again["lastUpdateId"] == ticker["closeTime"]:
            break
    else:
        pytest.fail("could not read the market within one second")
    assert len(book["bids"]) == len(book["asks"]) == 5
    mid = (Decimal(book["bids"][0][0]) + Decimal(book["asks"][0][0])) / 2
    assert Decimal(ticker["lastPrice"]) == mid == Decimal(price["price"]) == Decimal(last[0][4])
    assert (ticker["bidPrice"], ticker["askPrice"]) == (book["bids"][0][0], book["asks"][0][0])
    assert (best["bidPrice"], best["bidQty"]) == tuple(book["bids"][0])
    assert (best["askPrice"], best["askQty"]) == tuple(book["asks"][0])
    assert Decimal(ticker["lowPrice"]) <= Decimal(ticker["lastPrice"]) <= Decimal(ticker["highPrice"])
    assert ticker["closeTime"] - ticker["openTime"] == DAY_MS
    assert ticker["lastId"] - ticker["firstId"] + 1 == ticker["count"]
    change = Decimal(ticker["lastPrice"]) - Decimal(ticker["openPrice"])
    assert Decimal(ticker["priceChange"]) == change

    every = (await sim.get("/api/v3/ticker/24hr")).json()
    assert [t["symbol"] for t in every] == [p.replace("/", "") for p in PAIRS]
    some = (await sim.get("/api/v3/ticker/24hr", params={"symbols": json.dumps(["XRPUSDT", "BTCUSDT"])})).json()
    assert [t["symbol"] for t in some] == ["XRPUSDT", "BTCUSDT"]
    mini = (await sim.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT", "type": "MINI"})).json()
    assert "bidPrice" not in mini
    assert "lastPrice" in mini
    assert "volume" in mini
    assert len((await sim.get("/api/v3/ticker/price")).json()) == len(PAIRS)
    assert len((await sim.get("/api/v3/ticker/bookTicker")).json()) == len(PAIRS)
    deep = (await sim.get("/api/v3/depth", params={"symbol": "BTCUSDT"})).json()
    assert len(deep["bids"]) == 100  # Binance's default


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v3/klines", {"symbol": "NOPEUSDT", "interval": "1m"}, 400, -1121),
        ("/api/v3/klines", {"interval": "1m"}, 400, -1102),
        ("/api/v3/klines", {"symbol": "BTCUSDT"}, 400, -1102),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "7m"}, 400, -1120),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, 400, -1100),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, 400, -1130),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": ""}, 400, -1105),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": 20, "endTime": 10}, 400, -1023),
        ("/api/v3/depth", {"symbol": "btcusdx"}, 400, -1121),
        ("/api/v3/depth", {}, 400, -1102),
        ("/api/v3/ticker/24hr", {"symbol": "NOPE"}, 400, -1121),
        ("/api/v3/ticker/24hr", {"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, 400, -1128),
        ("/api/v3/ticker/24hr", {"symbols": "BTCUSDT"}, 400, -1100),
        ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT","NOPE"]'}, 400, -1121),
        ("/api/v3/ticker/24hr", {"type": "HUGE"}, 400, -1139),
        ("/api/v3/ticker/price", {"symbol": "NOPE"}, 400, -1121),
        ("/api/v3/exchangeInfo", {"symbol": "NOPE"}, 400, -1121),
        ("/api/v3/account", {}, 404, -1020),
        ("/sapi/v1/capital/config/getall", {}, 404, -1020),
    ],
)
async def test_binance_shaped_errors(
    sim: httpx.AsyncClient, path: str, params: dict[str, str], status: int, code: int
) -> None:
    response = await sim.get(path, params=params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"code", "msg"}
    assert body["code"] == code
    assert body["msg"]


async def test_wrong_method_is_answered_like_binance(sim: httpx.AsyncClient) -> None:
    response = await sim.post("/api/v3/order", data={"symbol": "BTCUSDT"})
    assert response.status_code == 404
    assert response.json()["code"] == -1020
    response = await sim.delete("/api/v3/klines")
    assert response.status_code == 405
    assert response.json()["code"] == -1020
    # Our own paths keep FastAPI's errors.
    assert (await sim.get("/_sim/nothing-here")).json() == {"detail": "Not Found"}


async def test_an_unexpected_error_is_answered_like_binance() -> None:
    def stopped_clock() -> float:
        raise RuntimeError("the clock stopped")

    app = create_app(simulator_settings(), clock=stopped_clock)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/api/v3/time")
        assert response.status_code == 500
        assert response.json() == {"code": -1000, "msg": "An unknown error occurred while processing the request."}
        own = await client.get("/_sim/health")
        assert own.status_code == 500
        assert own.json() == {"detail": "Internal server error."}
        stats = (await client.get("/_sim/stats")).json()
        assert stats["endpoints"]["/api/v3/time"]["statuses"] == {"500": 1}
