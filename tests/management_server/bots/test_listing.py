"""management_server/bots/listing.py: the bot list written straight from its rows is list[BotOut]'s JSON, value for
value, for every field BotOut has (each one set to something other than its default by some bot here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from pydantic import TypeAdapter
from sqlalchemy import select

from management_server.bots import listing
from management_server.bots.models import Bot
from management_server.bots.schemas import BotOut
from management_server.users.models import User
from management_server.users.viewer import Viewer
from tests.management_server.bots.test_lifecycle import admin_bot
from tests.management_server.conftest import Management

AS_JSON = TypeAdapter(list[BotOut])
AT = datetime(2026, 12, 5, 7, 30, tzinfo=UTC)


def variants(owner: uuid.UUID, strategy: uuid.UUID) -> list[Bot]:
    """Bots whose fields take the awkward values: no stake (unlimited), decimals with trailing zeros, whole
    datetimes and ones with microseconds, nested FreqAI settings, text that JSON must escape."""
    common: dict[str, Any] = {
        "owner_id": owner,
        "strategy_id": strategy,
        "exchange": "simulator",
        "timeframe": "5m",
        "stake_currency": "USDT",
        "max_open_trades": 3,
    }
    return [
        Bot(
            name="unlimited",
            pairs=["BTC/USDT"],
            stake_amount=None,
            dry_run_wallet=Decimal("1000.00000000"),
            created_at=AT,
            updated_at=AT,
            **common,
        ),
        Bot(
            name="everything set",
            pairs=["BTC/USDT", "ETH/USDT:USDT"],
            stake_amount=Decimal("12.50000000"),
            dry_run=False,
            dry_run_wallet=Decimal("0.00000001"),
            stoploss=-0.1,
            freqai={"enabled": True, "feature_parameters": {"include_timeframes": ["5m", "1h"], "DI_threshold": 0.9}},
            model_id=uuid.uuid4(),
            model_state="loaded",
            model_loaded_id=uuid.uuid4(),
            desired_state="running",
            actual_state="running",
            generation=7,
            gateway_id="gw-1",
            launcher="fork",
            last_error='quote " backslash \\ newline \n tab \t and ünïcode ✓',
            max_drawdown_ratio=0.25,
            pinned_gateway_id="gw-pinned",
            risk_reason="drawdown 30% reached the limit of 25%",
            risk_paused_at=AT + timedelta(microseconds=120000),
            created_at=AT + timedelta(seconds=1, microseconds=123),
            updated_at=AT + timedelta(days=1),
            **common,
        ),
        Bot(
            name="large",
            pairs=[f"C{i}/USDT" for i in range(200)],
            stake_amount=Decimal("1000000000000.00000000"),
            stoploss=-1e-05,
            created_at=AT + timedelta(seconds=2),
            updated_at=AT + timedelta(seconds=2),
            **common,
        ),
    ]


async def test_the_list_written_from_rows_is_botouts_json_value_for_value(management: Management) -> None:
    _, first = await admin_bot(management)
    async with management.app.state.sessionmaker() as session:
        made = await session.get(Bot, uuid.UUID(first))
        assert made is not None
        owner = await session.get(User, made.owner_id)
        assert owner is not None
        session.add_all(variants(made.owner_id, made.strategy_id))
        await session.commit()

    async with management.app.state.sessionmaker() as session:
        bots = list((await session.execute(select(Bot).order_by(Bot.created_at, Bot.id))).scalars())
        expected = AS_JSON.dump_python([BotOut.model_validate(b) for b in bots], mode="json")
        page = await listing.page(session, Viewer(owner, True), 1000, 0)
    assert page.count == len(bots) == 4
    assert orjson.loads(page.body) == expected
    assert page.last == (bots[-1].created_at, bots[-1].id)
    unset = {field for field in BotOut.model_fields if all(bot[field] is None for bot in expected)}
    assert unset == {"credentials_id"}  # every field is tried with a value (that one: a UUID like model_id's)

    async with management.app.state.sessionmaker() as session:  # pages: after a key, and only one's own bots
        after = await listing.page(session, Viewer(owner, False), 2, 0, (bots[1].created_at, bots[1].id))
        nobody = await listing.page(session, Viewer(User(id=uuid.uuid4(), email="x@example.com"), False), 10, 0)
    assert [b["id"] for b in orjson.loads(after.body)] == [str(b.id) for b in bots[2:4]]
    assert (nobody.body, nobody.count, nobody.last) == (b"[]", 0, None)
