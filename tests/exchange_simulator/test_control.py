"""The ``/_sim/`` control API over real HTTP: shocks, paths, outages, latency, reset, statistics."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.helpers import async_wait_for


async def _price(sim: httpx.AsyncClient, symbol: str) -> Decimal:
    return Decimal((await sim.get("/api/v3/ticker/price", params={"symbol": symbol})).json()["price"])


async def test_health_and_state(sim: httpx.AsyncClient) -> None:
    health = (await sim.get("/_sim/health")).json()
    assert health["status"] == "ok"
    assert health["seed"] == 1234
    assert "BTC/USDT" in health["pairs"]
    assert (await sim.get("/health/ready")).json()["status"] == "ok"
    state = (await sim.get("/_sim/state")).json()
    assert state["outage"] is None
    assert state["latency"] is None
    btc = next(m for m in state["markets"] if m["pair"] == "BTC/USDT")
    assert btc["symbol"] == "BTCUSDT"
    assert btc["price"] > 0
    assert btc["overlays"] == []


async def test_shock_moves_ticker_book_and_candles(sim: httpx.AsyncClient) -> None:
    shock = (await sim.post("/_sim/shock", json={"pair": "ETHUSDT", "percent": -12.5})).json()
    assert shock["pair"] == "ETH/USDT"
    assert shock["price_after"] == pytest.approx(shock["price_before"] * 0.875, rel=1e-5)
    # Right after: the ticker, the book and the open candle show the new level (the seeded
    # market moves by far less than 12.5 % in a second or two).
    price = float(await _price(sim, "ETHUSDT"))
    assert price == pytest.approx(shock["price_after"], rel=0.01)
    book = (await sim.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 1})).json()
    assert float(book["bids"][0][0]) == pytest.approx(shock["price_after"], rel=0.01)
    candle = (await sim.get("/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m", "limit": 1})).json()[0]
    assert float(candle[3]) <= price * 1.001  # the candle's low reaches the shocked price
    state = (await sim.get("/_sim/state")).json()
    eth = next(m for m in state["markets"] if m["pair"] == "ETH/USDT")
    assert eth["overlays"] == [{"kind": "shock", "at": shock["at"], "percent": -12.5}]
    # Reset of that pair: back to the seeded price.
    assert (await sim.post("/_sim/reset", json={"pair": "ETH/USDT"})).json() == {"reset": ["ETH/USDT"]}
    assert float(await _price(sim, "ETHUSDT")) == pytest.approx(shock["price_before"], rel=0.01)


async def test_scripted_path(sim: httpx.AsyncClient) -> None:
    # Up 20 % within 2 s, hold there for 10 minutes.
    points = [{"after_seconds": 2, "percent": 20}, {"after_seconds": 600, "percent": 20}]
    path = (await sim.post("/_sim/path", json={"pair": "xrp/usdt", "points": points})).json()
    start = path["start_price"]
    assert path["pair"] == "XRP/USDT"
    assert path["points"][0]["price"] == path["points"][1]["price"] == pytest.approx(start * 1.2, abs=0.0002)
    target = Decimal(str(path["points"][0]["price"]))

    async def on_the_plateau() -> bool:
        return await _price(sim, "XRPUSDT") == target

    await async_wait_for(on_the_plateau, timeout=10, what="the price at the first way-point")
    candle = (await sim.get("/api/v3/klines", params={"symbol": "XRPUSDT", "interval": "1m", "limit": 2})).json()
    assert max(Decimal(c[2]) for c in candle) >= target  # the candles went up with it
    absolute = await sim.post("/_sim/path", json={"pair": "XRPUSDT", "points": [{"after_seconds": 1, "price": 0.5}]})
    assert absolute.json()["points"] == [{"at": absolute.json()["at"] + 1000, "price": 0.5}]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/_sim/shock", {"pair": "NOPE/USDT", "percent": 5}, 404),
        ("/_sim/shock", {"pair": "BTC/USDT", "percent": -100}, 422),
        ("/_sim/shock", {"pair": "BTC/USDT"}, 422),
        ("/_sim/shock", {"pair": "BTC/USDT", "percent": 5, "extra": 1}, 422),
        ("/_sim/path", {"pair": "BTC/USDT", "points": []}, 422),
        ("/_sim/path", {"pair": "BTC/USDT", "points": [{"after_seconds": 5}]}, 422),
        ("/_sim/path", {"pair": "BTC/USDT", "points": [{"after_seconds": 5, "price": 1, "percent": 1}]}, 422),
        ("/_sim/path", {"pair": "BTC/USDT", "points": [{"after_seconds": 5, "price": -1}]}, 422),
        (
            "/_sim/path",
            {"pair": "BTC/USDT", "points": [{"after_seconds": 5, "price": 1}, {"after_seconds": 5, "price": 2}]},
            422,
        ),
        ("/_sim/path", {"pair": "BTC/USDT", "points": [{"after_seconds": 0.0001, "price": 1}]}, 422),
        ("/_sim/path", {"pair": "NOPE/USDT", "points": [{"after_seconds": 5, "price": 1}]}, 404),
        ("/_sim/outage", {"seconds": 0}, 422),
        ("/_sim/outage", {"seconds": 5, "mode": "explode"}, 422),
        ("/_sim/latency", {"ms": -1}, 422),
        ("/_sim/reset", {"pair": "NOPE/USDT"}, 404),
    ],
)
async def test_bad_control_requests_are_4xx(
    sim: httpx.AsyncClient, path: str, body: dict[str, Any], status: int
) -> None:
    response = await sim.post(path, json=body)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    state = (await sim.get("/_sim/state")).json()
    assert all(m["overlays"] == [] for m in state["markets"])
    assert state["outage"] is None


async def test_outage_errors_then_recovers(sim: httpx.AsyncClient) -> None:
    started = (await sim.post("/_sim/outage", json={"seconds": 1.5})).json()
    assert started["mode"] == "error"
    assert 0 < started["remaining_seconds"] <= 1.5
    down = await sim.get("/api/v3/depth", params={"symbol": "BTCUSDT"})
    assert down.status_code == 503
    assert down.json()["code"] == -1001
    assert (await sim.get("/_sim/health")).status_code == 200  # control stays up
    assert (await sim.get("/health/live")).status_code == 200

    async def back() -> bool:
        return (await sim.get("/api/v3/ping")).status_code == 200

    await async_wait_for(back, timeout=5, interval=0.1, what="the end of the outage")  # it ends by itself
    assert (await sim.get("/_sim/state")).json()["outage"] is None
    depth = (await sim.get("/_sim/stats")).json()["endpoints"]["/api/v3/depth"]
    assert depth["statuses"]["503"] == 1


async def test_timeout_outage_holds_requests_until_it_ends(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/outage", json={"seconds": 30, "mode": "timeout"})
    with pytest.raises(httpx.ReadTimeout):
        await sim.get("/api/v3/time", timeout=0.5)
    held = asyncio.create_task(sim.get("/api/v3/time", timeout=10))
    await asyncio.sleep(0.3)
    assert not held.done()
    assert (await sim.delete("/_sim/outage")).json() == {"ended": True}
    answer = await asyncio.wait_for(held, 5)
    assert answer.status_code == 504
    assert answer.json()["code"] == -1007
    assert (await sim.get("/api/v3/time")).status_code == 200


async def test_latency_is_added_then_removed(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/latency", json={"ms": 300})
    started = time.perf_counter()
    assert (await sim.get("/api/v3/ping")).status_code == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    await sim.get("/_sim/health")
    assert time.perf_counter() - started < 0.3  # not the control API
    assert (await sim.delete("/_sim/latency")).json() == {"cleared": True}
    started = time.perf_counter()
    await sim.get("/api/v3/ping")
    assert time.perf_counter() - started < 0.3
    await sim.post("/_sim/latency", json={"ms": 200, "seconds": 0.2})
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    await sim.get("/api/v3/ping")
    assert time.perf_counter() - started < 0.2  # expired by itself


async def test_statistics_per_endpoint(sim: httpx.AsyncClient) -> None:
    for _ in range(3):
        await sim.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "5m"})
    await sim.get("/api/v3/klines", params={"symbol": "NOPE", "interval": "5m"})
    await sim.get("/api/v3/depth", params={"symbol": "BTCUSDT"})
    await sim.get("/api/v3/no-such-endpoint")
    await sim.get("/_sim/state")  # control traffic is not counted
    stats = (await sim.get("/_sim/stats")).json()
    klines = stats["endpoints"]["/api/v3/klines"]
    assert (klines["count"], klines["errors"], klines["statuses"]) == (4, 1, {"200": 3, "400": 1})
    assert 0 < klines["latency_ms"]["p50"] <= klines["latency_ms"]["p99"] <= klines["latency_ms"]["max"]
    assert stats["endpoints"]["/api/v3/depth"]["count"] == 1
    assert stats["endpoints"]["other"]["statuses"] == {"404": 1}
    assert (stats["total"], stats["errors"]) == (6, 2)
    await sim.delete("/_sim/stats")
    assert (await sim.get("/_sim/stats")).json()["total"] == 0
