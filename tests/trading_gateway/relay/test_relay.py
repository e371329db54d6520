"""The relay process, as its gateway's keeper starts it, against the real simulator with Binance's limits on:
many bots' identical requests become one upstream request and answers equal to a direct fetch; private requests go
through unchanged; the IP stays inside its budget; a 418 silences it until the ban ends; a dead relay comes back on
its port."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from shared.settings import Environment
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.helpers import async_wait_for
from trading_gateway.config import GatewaySettings
from trading_gateway.relay.keeper import RelayKeeper

KLINES = {"symbol": "BTCUSDT", "interval": "1m", "limit": "100"}


@pytest_asyncio.fixture
async def relay(own_simulator: SimulatorProcess, tmp_path: Path) -> AsyncIterator[RelayKeeper]:
    settings = GatewaySettings(
        env=Environment.test,
        data_dir=tmp_path,
        redis_url=SecretStr("redis://127.0.0.1:1/0"),  # not used by the relay
        gateway_id="gw-relay",
        simulator_url=own_simulator.url,
    )
    keeper = RelayKeeper(settings)
    await keeper.start()
    try:
        yield keeper
    finally:
        await keeper.stop()


@pytest_asyncio.fixture
async def sim(own_simulator: SimulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=own_simulator.url, timeout=10) as client:
        yield client


def bot_url(relay: RelayKeeper, bot: str) -> str:
    url = relay.url_for("simulator", bot)
    assert url is not None
    return url + "/api/v3"


async def upstream_count(sim: httpx.AsyncClient, path: str) -> int:
    stats: dict[str, Any] = (await sim.get("/_sim/stats")).json()
    return int(stats["endpoints"].get(path, {}).get("count", 0))


async def limits(sim: httpx.AsyncClient) -> dict[str, Any]:
    found: dict[str, Any] = (await sim.get("/_sim/limits")).json()
    return found


async def test_bots_asking_the_same_share_one_upstream_request_and_get_what_the_exchange_says(
    relay: RelayKeeper, sim: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        before = await upstream_count(sim, "/api/v3/klines")
        answers = [await http.get(bot_url(relay, f"bot-{i}") + "/klines", params=KLINES) for i in range(10)]
        direct = await sim.get("/api/v3/klines", params=KLINES)
        assert all(a.status_code == 200 for a in answers)
        # At most one upstream request per second of the open candle (two when the 10 straddle a second).
        assert await upstream_count(sim, "/api/v3/klines") - before <= 3  # the direct fetch is one of them
        outcomes = [a.headers["x-freqfleet-relay"] for a in answers]
        assert outcomes.count("miss") <= 2
        assert set(outcomes) <= {"miss", "hit", "coalesced"}
        # Closed candles equal the direct fetch's (the open one, each answer's last, moves every tick).
        closed = {row[0]: row for row in direct.json()[:-1]}
        for a in answers:
            rows = [row for row in a.json()[:-1] if row[0] in closed]
            assert len(rows) >= 98  # a minute may have turned in between
            assert rows == [closed[row[0]] for row in rows]
            assert a.headers["x-mbx-used-weight-1m"].isdigit()  # the exchange's count, passed on

        # A closed range is the same whenever asked: one upstream request for any number of bots.
        past = {**KLINES, "endTime": str(int(time.time() * 1000) - 3_600_000)}
        first = await http.get(bot_url(relay, "bot-0") + "/klines", params=past)
        again = [await http.get(bot_url(relay, f"bot-{i}") + "/klines", params=past) for i in range(1, 5)]
        assert {a.headers["x-freqfleet-relay"] for a in again} == {"hit"}
        assert first.json() == (await sim.get("/api/v3/klines", params=past)).json()

        # exchangeInfo is kept for minutes.
        before = await upstream_count(sim, "/api/v3/exchangeInfo")
        infos = [await http.get(bot_url(relay, f"bot-{i}") + "/exchangeInfo") for i in range(5)]
        assert {i.status_code for i in infos} == {200}
        assert await upstream_count(sim, "/api/v3/exchangeInfo") - before == 1

        # A private (signed) request goes through as it is, every time, and is never kept.
        signed = {"timestamp": "1", "signature": "abc"}
        headers = {"X-MBX-APIKEY": "key"}
        via = [await http.get(bot_url(relay, "bot-0") + "/account", params=signed, headers=headers) for _ in range(2)]
        plain = await sim.get("/api/v3/account", params=signed, headers=headers)
        assert [v.status_code for v in via] == [plain.status_code] * 2
        assert [v.json() for v in via] == [plain.json()] * 2
        assert [v.headers["x-freqfleet-relay"] for v in via] == ["private", "private"]

        # Only the exchange's API is forwarded: not the simulator's control routes, not another exchange.
        assert (await http.get(relay.base_url + "/x/simulator/bot-0/_sim/limits")).status_code == 404
        assert (await http.get(relay.base_url + "/x/kraken/bot-0/api/v3/time")).status_code == 404

    await async_wait_for(lambda: _has_stats(relay, "bot-1"), timeout=10, what="the keeper to read the relay's numbers")
    numbers = relay.bot_numbers("bot-1")
    assert numbers is not None
    assert numbers["requests"] == 3  # klines, the closed range, exchangeInfo
    assert numbers["hits"] + numbers["coalesced"] + numbers["misses"] == 3
    summary = relay.summary()
    assert summary is not None
    assert summary["exchanges"]["simulator"]["limit"] == 6000


async def _has_stats(relay: RelayKeeper, bot: str) -> bool:
    numbers = relay.bot_numbers(bot)
    return numbers is not None and numbers["requests"] >= 3


async def test_the_ip_stays_inside_the_exchange_limit_and_the_relay_refuses_the_rest_itself(
    relay: RelayKeeper, sim: httpx.AsyncClient
) -> None:
    # A limit of 60 a minute, as exchangeInfo states it (a bot's first request); the relay spends 90 % of it (54),
    # counting what others on the IP spend (the exchange's header says it): here 20 by the test, directly. Requests
    # that are never kept (the server time, 1 each) from 3 bots: what is over the budget waits for the next minute
    # or is refused by the relay itself. A relay that counted only its own would send 34 more and get 429s.
    assert (await sim.put("/_sim/limits", json={"weight_per_minute": 60, "ban_after": 2})).status_code == 200
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(bot_url(relay, "bot-0") + "/exchangeInfo")).status_code == 200  # 20
        for _ in range(20):
            assert (await sim.get("/api/v3/ping")).status_code == 200
        answers = [await http.get(bot_url(relay, f"bot-{i % 3}") + "/time") for i in range(80)]
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    assert statuses.count(200) >= 10
    assert refused
    assert {a.headers.get("x-freqfleet-relay") for a in refused} == {"refused"}  # none came from the exchange
    assert int(refused[0].headers["retry-after"]) >= 1
    state = await limits(sim)
    assert (state["requests_429"], state["requests_418"]) == (0, 0)  # the exchange refused nothing


async def test_a_ban_silences_the_relay_until_it_ends(relay: RelayKeeper, sim: httpx.AsyncClient) -> None:
    # Something else on this IP (the test, directly) gets it banned for 4 s.
    await sim.put("/_sim/limits", json={"weight_per_minute": 10, "ban_after": 1, "first_ban_seconds": 4})
    while (await sim.get("/api/v3/time")).status_code != 418:
        pass
    await sim.put("/_sim/limits", json={"weight_per_minute": 6000})  # the ban stands; after it, room again
    banned_at = (await limits(sim))["requests_418"]
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.get(bot_url(relay, "bot-0") + "/time")  # the relay does not know yet: it asks
        assert first.status_code == 418
        later = [await http.get(bot_url(relay, f"bot-{i}") + "/time") for i in range(20)]
        assert {a.status_code for a in later} == {418}
        assert {a.headers["x-freqfleet-relay"] for a in later} == {"refused"}
        assert "banned" in later[0].json()["msg"]
        assert (await limits(sim))["requests_418"] == banned_at + 1  # only the one request that learned of it

        async def through() -> bool:
            return (await http.get(bot_url(relay, "bot-0") + "/time")).status_code == 200

        await async_wait_for(through, timeout=15, interval=0.5, what="the relay to send again once the ban ended")
    assert (await limits(sim))["requests_418"] == banned_at + 1


async def test_a_dead_relay_comes_back_on_its_port(relay: RelayKeeper) -> None:
    stats = relay.last_stats
    assert stats is not None
    port = relay.port
    assert json.loads((relay.folder / "relay.json").read_text()) == {"port": port}
    pid = relay._popen.pid if relay._popen else 0
    os.kill(pid, signal.SIGKILL)

    async def back() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            try:
                return (await http.get(bot_url(relay, "bot-0") + "/ping")).status_code == 200
            except httpx.HTTPError:
                return False

    await async_wait_for(lambda: _restarted(relay), timeout=30, what="the keeper to start the relay again")
    await async_wait_for(back, timeout=30, what="the relay to answer again")
    assert relay.port == port


async def _restarted(relay: RelayKeeper) -> bool:
    return relay.starts >= 2


pytestmark = pytest.mark.usefixtures("own_simulator")


async def test_a_relay_that_cannot_start_is_tried_again_ever_more_slowly(
    own_simulator: SimulatorProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as busy:  # its port taken by another program
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = GatewaySettings(
            env=Environment.test,
            data_dir=tmp_path,
            redis_url=SecretStr("redis://127.0.0.1:1/0"),
            gateway_id="gw-relay",
            simulator_url=own_simulator.url,
            relay_port=busy.getsockname()[1],
        )
        keeper = RelayKeeper(settings)
        await keeper.start()  # does not hang nor raise: the gateway starts, bots' market data fails meanwhile
        try:
            watched = time.monotonic() + 7
            await async_wait_for(lambda: _after(watched), timeout=10, what="7 s")
            # Tries after 2 s, then 4 s...: not one a second.
            assert 2 <= keeper.starts <= 4, keeper.starts
            task = keeper._task  # the keeper lives on
            assert task is not None
            assert not task.done()
            assert "the relay did not start" in caplog.text
        finally:
            await keeper.stop()


async def _after(moment: float) -> bool:
    return time.monotonic() >= moment
