"""Analytics through the real management server: trades arrive as gateway events on the real bus; the
answers equal Freqtrade's functions on the same trades, respect ownership, and are cached until a new trade."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from management_server.analytics.metrics import TradeRow, compute
from management_server.users.models import Role
from shared.bus.messages import TradeClosed, TradeClosedData, TradeOpened, TradeOpenedData
from shared.bus.streams import EVENTS_STREAM
from tests.enrollment import gateway_events
from tests.helpers import async_wait_for
from tests.management_server.analytics.test_metrics import freqtrade_figures
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.conftest import Management

T0 = datetime(2026, 11, 20, 9, 0, 7, 654321, tzinfo=UTC)  # microseconds: times must come back exact
SOURCE = "gateway:gw-test"

# (pair, opened after minutes, held for minutes, stake, profit ratio); closes interleave to make a drawdown
TRADES = [
    ("BTC/USDT", 0, 30, 100.0, 0.031),
    ("ETH/USDT", 10, 45, 100.0, -0.012),
    ("BTC/USDT", 50, 20, 100.0, -0.027),
    ("SOL/USDT", 75, 300, 200.0, 0.015),
    ("ETH/USDT", 90, 30, 100.0, 0.0),
    ("ETH/USDT", 1500, 60, 100.0, -0.041),
    ("BTC/USDT", 1600, 90, 150.0, 0.022),
]


def closed(
    bot_id: uuid.UUID, trade_id: int, pair: str, after: int, held: int, stake: float, ratio: float
) -> TradeClosed:
    opened = T0 + timedelta(minutes=after)
    return TradeClosed(
        source=SOURCE,
        data=TradeClosedData(
            bot_id=bot_id,
            trade_id=trade_id,
            pair=pair,
            open_date=opened,
            open_rate=100.0,
            amount=stake / 100.0,
            stake_amount=stake,
            close_date=opened + timedelta(minutes=held),
            close_rate=100.0 * (1 + ratio),
            profit_abs=round(stake * ratio, 8),
            profit_ratio=ratio,
            exit_reason="exit_signal",
        ),
    )


def rows(events: list[TradeClosed]) -> list[TradeRow]:
    return [
        TradeRow(
            e.data.bot_id,
            e.data.trade_id,
            e.data.pair,
            False,
            e.data.open_date,
            e.data.close_date,
            e.data.stake_amount,
            e.data.profit_abs,
            e.data.profit_ratio,
        )
        for e in events
    ]


async def trade_count(management: Management, bot_id: str, headers: dict[str, str], count: int) -> bool:
    found = (await management.client.get(f"/api/v1/bots/{bot_id}/trades", headers=headers)).json()
    return len(found) == count and all(not t["is_open"] for t in found)


async def new_bot(management: Management, headers: dict[str, str], strategy: str, name: str, **fields: Any) -> str:
    response = await management.client.post(
        "/api/v1/bots", json=bot_body(strategy, name=name, **fields), headers=headers
    )
    assert response.status_code == 201, response.text
    bot_id: str = response.json()["id"]
    return bot_id


async def test_analytics_of_a_bot_a_user_and_the_fleet(management: Management, redis_url: str) -> None:
    admin = await session_of(management, "root@example.com", Role.admin)
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    strategy = (await upload(management, admin)).json()["id"]
    await management.client.post(f"/api/v1/strategies/{strategy}/approve", headers=admin)
    alice_strategy = (await upload(management, alice)).json()["id"]
    await management.client.post(f"/api/v1/strategies/{alice_strategy}/approve", headers=admin)
    bob_strategy = (await upload(management, bob)).json()["id"]
    await management.client.post(f"/api/v1/strategies/{bob_strategy}/approve", headers=admin)
    a1 = await new_bot(management, alice, alice_strategy, "a1", dry_run_wallet="10000")
    a2 = await new_bot(management, alice, alice_strategy, "a2")  # no wallet: Freqtrade's default 1000
    b1 = await new_bot(management, bob, bob_strategy, "b1", dry_run_wallet="5000")

    redis = aioredis.Redis.from_url(redis_url)
    publisher = gateway_events(management, redis)
    a1_events = [closed(uuid.UUID(a1), i + 1, *t) for i, t in enumerate(TRADES)]
    a2_events = [closed(uuid.UUID(a2), 1, "XRP/USDT", 200, 15, 50.0, -0.02)]
    b1_events = [closed(uuid.UUID(b1), 1, "BTC/USDT", 5, 5, 500.0, 0.01)]
    open_one = TradeOpened(
        source=SOURCE,
        data=TradeOpenedData(
            bot_id=uuid.UUID(a1), trade_id=8, pair="SOL/USDT", open_date=T0 + timedelta(days=2),
            open_rate=20.0, amount=5.0, stake_amount=100.0,
        ),
    )  # fmt: skip
    for event in [*a1_events, open_one, *a2_events, *b1_events]:
        await publisher.publish(EVENTS_STREAM, event)
    await async_wait_for(lambda: trade_count(management, a2, alice, 1), timeout=15, what="a2's trade")
    await async_wait_for(lambda: trade_count(management, b1, bob, 1), timeout=15, what="b1's trade")

    # One bot: every figure as Freqtrade's functions compute it from the same trades (starting balance:
    # the dry-run wallet times Freqtrade's tradable_balance_ratio 0.99).
    answer = await management.client.get(f"/api/v1/analytics/bots/{a1}", headers=alice)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-analytics-cache"] == "miss"
    figures = answer.json()
    assert figures["starting_balance"] == pytest.approx(9900.0)
    still_open = TradeRow(uuid.UUID(a1), 8, "SOL/USDT", True, open_one.data.open_date, None, 100.0, None, None)
    theirs = freqtrade_figures([*rows(a1_events), still_open], 9900.0)
    for key, value in theirs.items():
        if key.endswith(("_start", "_end")):
            assert datetime.fromisoformat(figures[key]) == datetime.fromisoformat(value).replace(tzinfo=UTC), key
        else:
            assert figures[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert (figures["trade_count"], figures["closed_trade_count"], figures["open_trade_count"]) == (8, 7, 1)
    assert (figures["winning_trades"], figures["losing_trades"]) == (4, 3)  # a 0 ratio counts as a win
    assert figures["win_rate"] == pytest.approx(4 / 7)
    profits = [round(stake * ratio, 8) for _, _, _, stake, ratio in TRADES]
    assert figures["profit_abs"] == pytest.approx(sum(profits))
    gains, losses = sum(p for p in profits if p >= 0), sum(p for p in profits if p < 0)
    assert figures["profit_factor"] == pytest.approx(gains / -losses)
    assert figures["best_pair"]["pair"] == "BTC/USDT"
    assert figures["worst_pair"]["pair"] == "ETH/USDT"
    assert figures["max_drawdown_abs"] > 0
    assert 0 < figures["max_drawdown_ratio"] < 1
    assert [d["date"] for d in figures["daily"]] == ["2026-11-20", "2026-11-21"]
    assert len(figures["equity_curve"]) == 7
    assert figures["equity_curve"][-1]["balance"] == pytest.approx(9900.0 + sum(profits))
    again = await management.client.get(f"/api/v1/analytics/bots/{a1}", headers=alice)
    assert again.headers["x-analytics-cache"] == "hit"
    assert again.json() == figures

    # Ownership: someone else's bot does not exist for you; an admin sees it.
    assert (await management.client.get(f"/api/v1/analytics/bots/{a1}", headers=bob)).status_code == 404
    assert (await management.client.get(f"/api/v1/analytics/bots/{uuid.uuid4()}", headers=bob)).status_code == 404
    assert (await management.client.get(f"/api/v1/analytics/bots/{a1}", headers=admin)).status_code == 200

    # A user's fleet is their bots' trades pooled, against the sum of their starting balances.
    mine = (await management.client.get("/api/v1/analytics/fleet", headers=alice)).json()
    assert (mine["scope"], mine["bot_count"], mine["stake_currency"], mine["users"]) == ("user", 2, "USDT", None)
    pooled = compute([*rows(a1_events + a2_events), still_open], 9900.0 + 990.0)
    for key in ("profit_abs", "profit_ratio", "max_drawdown_abs", "max_drawdown_ratio", "sharpe", "sortino", "calmar"):
        assert mine[key] == pytest.approx(pooled[key], rel=1e-9), key
    assert {b["name"]: b["closed_trade_count"] for b in mine["bots"]} == {"a1": 7, "a2": 1}
    refused = await management.client.get(
        "/api/v1/analytics/fleet", params={"user_id": str(uuid.uuid4())}, headers=alice
    )
    assert refused.status_code == 404
    everyone = (await management.client.get("/api/v1/analytics/fleet", headers=admin)).json()
    assert (everyone["scope"], everyone["bot_count"]) == ("fleet", 3)
    assert {u["email"]: u["bot_count"] for u in everyone["users"]} == {"alice@example.com": 2, "bob@example.com": 1}
    assert everyone["profit_abs"] == pytest.approx(pooled["profit_abs"] + 5.0)
    bob_id = (await management.client.get("/api/v1/users/me", headers=bob)).json()["id"]
    bobs = await management.client.get("/api/v1/analytics/fleet", params={"user_id": bob_id}, headers=admin)
    assert (bobs.json()["scope"], bobs.json()["profit_abs"]) == ("user", pytest.approx(5.0))
    bad = await management.client.get("/api/v1/analytics/fleet", params={"stake_currency": "usdt!"}, headers=alice)
    assert bad.status_code == 422

    # The admin's look at bob's bots is the answer bob gets (one scope, one cached answer).
    assert (await management.client.get("/api/v1/analytics/fleet", headers=bob)).headers["x-analytics-cache"] == "hit"
    # A new trade of a1 makes a1's, alice's and the fleet's answers stale, not bob's.
    assert (await management.client.get("/api/v1/analytics/fleet", headers=alice)).headers["x-analytics-cache"] == "hit"
    await publisher.publish(EVENTS_STREAM, closed(uuid.UUID(a1), 9, "BTC/USDT", 3000, 10, 100.0, 0.05))

    async def refreshed() -> dict[str, Any] | None:
        response = await management.client.get(f"/api/v1/analytics/bots/{a1}", headers=alice)
        body: dict[str, Any] = response.json()
        return body if body["closed_trade_count"] == 8 else None

    fresh = await async_wait_for(refreshed, timeout=15, what="the new trade in a1's analytics")
    assert fresh["profit_abs"] == pytest.approx(sum(profits) + 5.0)
    assert (await management.client.get("/api/v1/analytics/fleet", headers=alice)).headers[
        "x-analytics-cache"
    ] == "miss"
    assert (await management.client.get("/api/v1/analytics/fleet", headers=bob)).headers["x-analytics-cache"] == "hit"
    unauthenticated = await management.client.get("/api/v1/analytics/fleet")
    assert unauthenticated.status_code == 401
    await redis.aclose()
