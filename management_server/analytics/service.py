"""Analytics of a bot, of a user's bots and of the fleet, from the trades the gateways reported.

Trades are read with one query of the columns the figures need; the figures are computed by
``metrics.py`` (off the event loop when there are many) and the answer is cached as JSON
(``cache.py``). Ratios need a starting balance: a bot's is its dry-run wallet as Freqtrade uses it,
a pool's is the sum of its bots' (bots of one stake currency: figures in USDT and in BTC don't add up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Uuid, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.analytics import metrics
from management_server.analytics.metrics import Trades
from management_server.analytics.schemas import BotAnalyticsOut, FleetAnalyticsOut
from management_server.bots.models import Bot
from management_server.errors import Refused
from management_server.users.models import User
from management_server.users.viewer import Viewer

THREAD_ABOVE = 5_000  # trades above which the figures are computed in a worker thread


@dataclass(frozen=True)
class BotInfo:
    id: uuid.UUID
    name: str
    owner_id: uuid.UUID
    stake_currency: str
    actual_state: str
    starting_balance: float | None


def _info(bot: Bot | Any) -> BotInfo:
    profit = (bot.last_status or {}).get("profit") if isinstance(bot.last_status, dict) else None
    return BotInfo(
        id=bot.id,
        name=bot.name,
        owner_id=bot.owner_id,
        stake_currency=bot.stake_currency,
        actual_state=bot.actual_state,
        starting_balance=metrics.starting_balance_of(
            bot.dry_run,
            None if bot.dry_run_wallet is None else float(bot.dry_run_wallet),
            profit if isinstance(profit, dict) else None,
        ),
    )


_BOT_COLUMNS = (
    Bot.id,
    Bot.name,
    Bot.owner_id,
    Bot.stake_currency,
    Bot.actual_state,
    Bot.dry_run,
    Bot.dry_run_wallet,
    Bot.last_status,
)


async def bots_of(session: AsyncSession, owner_id: uuid.UUID | None) -> list[BotInfo]:
    """Every bot (``owner_id`` None) or one user's."""
    query = select(*_BOT_COLUMNS).order_by(Bot.created_at, Bot.id)
    if owner_id is not None:
        query = query.where(Bot.owner_id == owner_id)
    return [_info(row) for row in (await session.execute(query)).all()]


# One row of columns (PostgreSQL builds the arrays; asyncpg decodes them in C): for 100,000 trades far
# cheaper than 100,000 rows. Times as integer microseconds since the epoch, through date_part's float8
# (cheaper than extract's numeric, and exact: a float8 of today's epoch seconds is within 0.25 us, so the
# rounding to whole microseconds gives back PostgreSQL's own value); bots as their index in :ids.
TRADES_SQL = text(
    """
    SELECT array_agg(b.n - 1), array_agg(t.trade_id), array_agg(t.pair), array_agg(t.is_open),
           array_agg((date_part('epoch', t.open_date) * 1000000)::bigint),
           array_agg(coalesce((date_part('epoch', t.close_date) * 1000000)::bigint, -1)),
           array_agg(t.stake_amount), array_agg(coalesce(t.profit_abs, 'NaN')),
           array_agg(coalesce(t.profit_ratio, 'NaN'))
    FROM trades t JOIN unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS b(id, n) ON t.bot_id = b.id
    """
).bindparams(bindparam("ids", type_=ARRAY(Uuid)))


async def trades_of(session: AsyncSession, bot_ids: Sequence[uuid.UUID]) -> Trades:
    """The trades of these bots, as columns (``Trades.bot`` indexes ``bot_ids``)."""
    row = (await session.execute(TRADES_SQL, {"ids": list(bot_ids)})).one() if bot_ids else None
    if row is None or row[0] is None:
        return Trades.of([])
    bots, trade_ids, pair_names, is_open, opened, closed, stake, profit, ratio = row
    codes: dict[str, int] = {}
    pair = [codes.setdefault(name, len(codes)) for name in pair_names]
    return Trades(
        bot=np.array(bots, dtype=np.int64),
        trade_id=np.array(trade_ids, dtype=np.int64),
        pair=np.array(pair, dtype=np.int64),
        pairs=list(codes),
        is_open=np.array(is_open, dtype=np.bool_),
        open_us=np.array(opened, dtype=np.int64),
        close_us=np.array(closed, dtype=np.int64),
        stake=np.array(stake, dtype=np.float64),
        profit_abs=np.array(profit, dtype=np.float64),
        profit_ratio=np.array(ratio, dtype=np.float64),
    )


def split(trades: Trades, count: int) -> list[Trades]:
    """The trades of each bot index ``0 .. count - 1``."""
    order = np.argsort(trades.bot, kind="stable")
    bounds = np.searchsorted(trades.bot[order], np.arange(count + 1))
    return [trades.take(order[bounds[i] : bounds[i + 1]]) for i in range(count)]


async def _compute(trades: Trades, starting_balance: float | None) -> dict[str, Any]:
    if len(trades) > THREAD_ABOVE:
        return await asyncio.to_thread(metrics.compute, trades, starting_balance)
    return metrics.compute(trades, starting_balance)


async def bot_analytics(session: AsyncSession, bot: Bot) -> BotAnalyticsOut:
    info = _info(bot)
    trades = await trades_of(session, [bot.id])
    figures = await _compute(trades, info.starting_balance)
    return BotAnalyticsOut.model_validate(
        figures
        | {
            "scope": "bot",
            "bot_id": bot.id,
            "name": bot.name,
            "owner_id": bot.owner_id,
            "stake_currency": bot.stake_currency,
            "generated_at": datetime.now(UTC),
        }
    )


def _pool_balance(bots: Sequence[BotInfo]) -> float | None:
    """The sum of the bots' starting balances; None when one of them is unknown."""
    balances = [b.starting_balance for b in bots]
    if not balances or any(b is None for b in balances):
        return None
    return float(sum(b for b in balances if b is not None))


def main_currency(bots: Sequence[BotInfo]) -> str | None:
    """The stake currency of most bots (ties: alphabetical)."""
    counts = Counter(b.stake_currency for b in bots)
    return min(counts, key=lambda c: (-counts[c], c)) if counts else None


async def fleet_owner(session: AsyncSession, viewer: Viewer, user_id: uuid.UUID | None) -> uuid.UUID | None:
    """Whose bots the fleet's figures are of: the viewer's own; an admin's choice of ``user_id``, or everyone's
    (None). :class:`Refused` (404) for a user the viewer may not ask about or that does not exist."""
    if not viewer.admin:
        if user_id is not None and user_id != viewer.user.id:
            raise Refused(404, "No such user.")
        return viewer.user.id
    if user_id is not None and await session.get(User, user_id) is None:
        raise Refused(404, "No such user.")
    return user_id


async def fleet_analytics(
    session: AsyncSession, owner_id: uuid.UUID | None, stake_currency: str | None
) -> FleetAnalyticsOut:
    """Every bot's trades (``owner_id`` None: the fleet) or one user's, in one stake currency."""
    every = await bots_of(session, owner_id)
    currency = stake_currency or main_currency(every)
    bots = [b for b in every if b.stake_currency == currency]
    others = sorted({b.stake_currency for b in every} - {currency} if currency else set())
    trades = await trades_of(session, [b.id for b in bots])
    emails: dict[uuid.UUID, str] = {}
    if owner_id is None:
        emails = {user_id: email for user_id, email in (await session.execute(select(User.id, User.email))).all()}

    def compute_all() -> dict[str, Any]:
        figures = metrics.compute(trades, _pool_balance(bots))
        per_bot = split(trades, len(bots))
        figures["bots"] = [
            {"bot_id": b.id, "name": b.name, "owner_id": b.owner_id, "actual_state": b.actual_state}
            | metrics.summary(per_bot[i], b.starting_balance)
            for i, b in enumerate(bots)
        ]
        if owner_id is not None:
            figures["users"] = None
            return figures
        figures["users"] = []
        for user_id in sorted({b.owner_id for b in bots}, key=lambda u: emails.get(u, "")):
            theirs = [i for i, b in enumerate(bots) if b.owner_id == user_id]
            mask = np.isin(trades.bot, theirs)
            figures["users"].append(
                {"user_id": user_id, "email": emails.get(user_id, ""), "bot_count": len(theirs)}
                | metrics.summary(trades.take(mask), _pool_balance([bots[i] for i in theirs]))
            )
        return figures

    figures = await asyncio.to_thread(compute_all) if len(trades) > THREAD_ABOVE else compute_all()
    return FleetAnalyticsOut.model_validate(
        figures
        | {
            "scope": "fleet" if owner_id is None else "user",
            "user_id": owner_id,
            "stake_currency": currency,
            "other_stake_currencies": others,
            "bot_count": len(bots),
            "generated_at": datetime.now(UTC),
        }
    )
