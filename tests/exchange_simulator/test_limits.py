"""Binance's request-weight limit in the simulator, over real HTTP: the weight of each request in its answer's
headers, 429 with Retry-After past the limit, a growing 418 ban for a client that keeps going, the control API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from exchange_simulator.app import create_app
from tests.exchange_simulator.conftest import simulator_settings
from tests.helpers import serve

START = 1_800_000_000.0  # a minute's first second (1_800_000_000 is a multiple of 60)


class Clock:
    """The simulator's wall clock, moved by the test: a minute ends when the test says so."""

    def __init__(self) -> None:
        self.now = START + 1

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(loop_scope="session")
async def sim(clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(create_app(simulator_settings(), clock=clock)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


def used(answer: httpx.Response) -> int:
    assert answer.headers["x-mbx-used-weight"] == answer.headers["x-mbx-used-weight-1m"]
    return int(answer.headers["x-mbx-used-weight-1m"])


async def test_every_answer_says_the_minutes_weight_by_binances_table(sim: httpx.AsyncClient, clock: Clock) -> None:
    steps = [
        ("/api/v3/ping", {}, 1),
        ("/api/v3/time", {}, 1),
        ("/api/v3/exchangeInfo", {}, 20),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "1000"}, 2),
        ("/api/v3/depth", {"symbol": "BTCUSDT"}, 5),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "500"}, 25),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "1000"}, 50),
        ("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}, 2),
        ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT","ETHUSDT"]'}, 2),
        ("/api/v3/ticker/24hr", {}, 80),
        ("/api/v3/ticker/price", {"symbol": "BTCUSDT"}, 2),
        ("/api/v3/ticker/price", {}, 4),
        ("/api/v3/ticker/bookTicker", {}, 4),
        ("/api/v3/klines", {"symbol": "NOPEUSDT", "interval": "1m"}, 2),  # an error costs its weight too
    ]
    total = 0
    for path, params, weight in steps:
        answer = await sim.get(path, params=params)
        total += weight
        assert used(answer) == total, (path, params)
    assert "x-mbx-used-weight-1m" not in (await sim.get("/_sim/limits")).headers  # the control API is not the market's
    clock.now += 60  # the next minute counts from zero
    assert used(await sim.get("/api/v3/ping")) == 1
    info = (await sim.get("/api/v3/exchangeInfo")).json()
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000} in info[
        "rateLimits"
    ]


async def test_past_the_limit_a_429_then_a_growing_ban_for_a_client_that_keeps_going(
    sim: httpx.AsyncClient, clock: Clock
) -> None:
    limits = await sim.put("/_sim/limits", json={"weight_per_minute": 10, "ban_after": 3})
    assert limits.status_code == 200, limits.text
    klines = {"symbol": "BTCUSDT", "interval": "1m", "limit": "5"}
    for _ in range(5):  # 5 x 2 = the whole minute's weight
        assert (await sim.get("/api/v3/klines", params=klines)).status_code == 200
    clock.now += 15  # 44 s of the minute left
    refused = await sim.get("/api/v3/klines", params=klines)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "44"
    assert refused.json()["code"] == -1003
    assert "current limit is 10 request weight per 1 MINUTE" in refused.json()["msg"]
    assert used(refused) == 10

    # It does not wait: two more are refused with 429, the third request of the wait is a ban.
    assert [(await sim.get("/api/v3/ping")).status_code for _ in range(2)] == [429, 429]
    banned = await sim.get("/api/v3/ping")
    assert banned.status_code == 418
    assert banned.headers["retry-after"] == "120"  # a first ban: 2 minutes
    assert "banned until" in banned.json()["msg"]
    clock.now += 60  # a new minute, still banned: every request, whatever its weight
    assert (await sim.get("/api/v3/ping")).status_code == 418
    clock.now += 61  # the ban is over
    assert (await sim.get("/api/v3/ping")).status_code == 200

    state = (await sim.get("/_sim/limits")).json()
    (mine,) = state["ips"].values()
    assert (mine["requests_429"], mine["requests_418"], mine["bans"]) == (3, 2, 1)
    assert (state["weight_per_minute"], state["ban_after"]) == (10, 3)
    stats = (await sim.get("/_sim/stats")).json()  # the simulator's statistics count them too
    assert stats["endpoints"]["/api/v3/klines"]["statuses"]["429"] == 1

    # The second ban is twice as long; an operator can lift it.
    for _ in range(10):
        await sim.get("/api/v3/ping")
    assert [(await sim.get("/api/v3/ping")).status_code for _ in range(3)][-1] == 418
    second = await sim.get("/api/v3/ping")
    assert second.status_code == 418
    assert second.headers["retry-after"] == "240"
    # A shorter first ban for tests that can't wait two minutes (doubled as Binance's is).
    assert (await sim.put("/_sim/limits", json={"weight_per_minute": 10, "first_ban_seconds": 5})).status_code == 200
    assert (await sim.get("/_sim/limits")).json()["first_ban_seconds"] == 5
    lifted = (await sim.delete("/_sim/limits/bans")).json()
    assert lifted["lifted"] == 1
    clock.now += 60
    assert (await sim.get("/api/v3/ping")).status_code == 200

    # Off: no limit, the weight still said; a reset brings the configured limit back.
    await sim.put("/_sim/limits", json={"weight_per_minute": 0})
    for _ in range(20):
        answer = await sim.get("/api/v3/ticker/24hr")
        assert answer.status_code == 200
    assert used(answer) > 6000 // 10
    assert not any(
        r["rateLimitType"] == "REQUEST_WEIGHT" for r in (await sim.get("/api/v3/exchangeInfo")).json()["rateLimits"]
    )
    (await sim.post("/_sim/reset")).raise_for_status()
    assert (await sim.get("/_sim/limits")).json() == {
        "weight_per_minute": 6000,
        "ban_after": 10,
        "first_ban_seconds": 120.0,
        "ips": {},
        "requests_429": 0,
        "requests_418": 0,
    }


async def test_bad_limit_settings_are_refused_with_the_reason(sim: httpx.AsyncClient) -> None:
    bad = ({"weight_per_minute": -1}, {"weight_per_minute": 10, "ban_after": 0}, {"weight": 10}, {})
    for body in (*bad, {"weight_per_minute": 10, "first_ban_seconds": 0}):
        answer = await sim.put("/_sim/limits", json=body)
        assert answer.status_code == 422, (body, answer.text)
