"""The dashboard's data: the fleet rows (each user their own, admins all with owners) and the live feed that pushes a
changed bot's row to the pages allowed to see it, from any session of the app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import update

from management_server.bots.models import Bot
from management_server.users.models import Role
from tests.helpers import until
from tests.management_server.bots.test_bots_api import bot_body, session_of, upload
from tests.management_server.conftest import Management


async def make_bot(management: Management, headers: dict[str, str], name: str, **changes: Any) -> str:
    strategy = (await upload(management, headers, name=f"s-{name}")).json()["id"]
    created = await management.client.post(
        "/api/v1/bots", json=bot_body(strategy, name=name, **changes), headers=headers
    )
    assert created.status_code == 201, created.text
    bot_id: str = created.json()["id"]
    return bot_id


async def test_the_fleet_shows_each_user_their_bots_and_an_admin_every_bot_with_its_owner(
    management: Management,
) -> None:
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    mine = await make_bot(management, alice, "alices")
    await make_bot(management, bob, "bobs")
    async with management.app.state.sessionmaker.begin() as session:  # what a gateway's report would leave
        status = {
            "state": "running",
            "open_trades": [{"trade_id": 1}, {"trade_id": 2}],
            "profit": {
                "profit_all_coin": 12.5,
                "profit_all_ratio": 0.0125,
                "max_drawdown": 0.02,
                "max_drawdown_abs": 3,
                "closed_trade_count": "not a number",
            },
        }
        await session.execute(
            update(Bot).where(Bot.id == uuid.UUID(mine)).values(last_status=status, last_error="exchange timeout")
        )

    rows = (await management.client.get("/api/v1/dashboard/fleet", headers=alice)).json()
    assert rows["admin"] is False
    [row] = rows["bots"]
    assert (row["id"], row["name"], row["open_trades"], row["profit_abs"], row["freqtrade_state"]) == (
        mine,
        "alices",
        2,
        12.5,
        "running",
    )
    assert (row["drawdown_ratio"], row["closed_trades"]) == (0.02, None)  # a report's word only where it is a number
    assert row["errors"] == ["exchange timeout"]
    assert "owner" not in row
    everyone = (await management.client.get("/api/v1/dashboard/fleet", headers=admin)).json()
    assert sorted((b["name"], b["owner"]) for b in everyone["bots"]) == [
        ("alices", "alice@example.com"),
        ("bobs", "bob@example.com"),
    ]


@contextlib.asynccontextmanager
async def feed(url: str, headers: dict[str, str]) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
    """A page's live feed: its events arrive in the queue."""
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def read() -> None:
        timeout = httpx.Timeout(10, read=60)  # a keepalive comes every 15 s
        async with (
            httpx.AsyncClient(base_url=url, timeout=timeout) as client,
            client.stream("GET", "/api/v1/dashboard/live", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = "message"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    await events.put((kind, json.loads(line[6:])))

    task = asyncio.create_task(read())
    try:
        assert (await asyncio.wait_for(events.get(), 10))[0] == "ready"
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_event(events: asyncio.Queue[tuple[str, Any]], timeout: float = 10) -> tuple[str, Any]:
    return await asyncio.wait_for(events.get(), timeout)


async def test_a_change_reaches_the_pages_allowed_to_see_it_and_no_other(management: Management) -> None:
    alice = await session_of(management, "alice@example.com")
    bob = await session_of(management, "bob@example.com")
    admin = await session_of(management, "root@example.com", Role.admin)
    bot_id = await make_bot(management, alice, "alices")
    async with (
        feed(management.url, alice) as alices,
        feed(management.url, bob) as bobs,
        feed(management.url, admin) as admins,
    ):
        changed = await management.client.patch(f"/api/v1/bots/{bot_id}", json={"max_open_trades": 1}, headers=alice)
        assert changed.status_code == 200
        kind, row = await next_event(alices)
        assert (kind, row["id"], row["max_open_trades"]) == ("bot", bot_id, 1)
        assert "owner" not in row
        kind, row = await next_event(admins)
        assert (kind, row["id"], row["owner"]) == ("bot", bot_id, "alice@example.com")

        # A change from another session of the app (as the events consumer's, applying a gateway's report).
        async with management.app.state.sessionmaker() as session:
            bot = await session.get(Bot, uuid.UUID(bot_id))
            assert bot is not None
            bot.actual_state = "failed"
            await session.commit()
        kind, row = await next_event(alices)
        assert (kind, row["actual_state"], row["errors"]) == ("bot", "failed", ["the bot is failed"])

        deleted = await management.client.delete(f"/api/v1/bots/{bot_id}", headers=alice)
        assert deleted.status_code == 204
        assert await next_event(alices) == ("gone", {"id": bot_id})
        assert bobs.empty()  # nothing of alice's reached bob
    feed_of_app = management.app.state.live_feed
    await until(lambda: not feed_of_app.clients, timeout=10, what="the pages that left to be forgotten")
