"""What gateways report, applied to bots and trades.

Every effect here is idempotent, so a redelivered event changes nothing: trades are keyed by
(bot, trade id), states are set (not toggled), and a status older than the one recorded is
dropped. Events of an older generation than the bot's don't change its state (a late report
from before the latest command), but their trades are still recorded. Within a generation, a
report older than the newest lifecycle report applied (``Bot.reported_at``) doesn't change the
state either: events can arrive out of order (a gateway sends again one Redis lost; two management
replicas apply a batch each at once).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import ActualState, Bot, DesiredState, Trade
from management_server.bots.service import settle_live_change
from shared.bus.messages import (
    BotFailed,
    BotStarted,
    BotStatus,
    BotStopped,
    CommandAccepted,
    CommandRejected,
    EmergencyStopCompleted,
    Envelope,
    TradeClosed,
    TradeOpened,
)
from shared.logging import get_logger

log = get_logger(__name__)

FREQTRADE_STATES = {"running": ActualState.running, "paused": ActualState.paused, "stopped": ActualState.stopped}


async def _current(session: AsyncSession, message: Envelope, generation: int | None) -> Bot | None:
    """The bot, locked, if this event may change its state."""
    bot_id = getattr(message.data, "bot_id", None)
    if bot_id is None:
        return None
    bot = await session.get(Bot, bot_id, with_for_update=True)
    if bot is None:
        log.info("event for an unknown bot", bot_id=str(bot_id), message_type=message.type)
        return None
    if not _from_its_gateway(bot, message):
        return None
    if generation is not None and generation < bot.generation:
        log.info(
            "event of an older generation: state left as is",
            bot_id=str(bot_id),
            generation=generation,
            current=bot.generation,
        )
        return None
    return bot


def _from_its_gateway(bot: Bot, message: Envelope) -> bool:
    """A gateway reports only on the bots placed on it (the signature proved which gateway sent it)."""
    if bot.gateway_id is None or message.source == f"gateway:{bot.gateway_id}":
        return True
    log.warning(
        "event about a bot of another gateway ignored",
        bot_id=str(bot.id),
        message_type=message.type,
        source=message.source,
        gateway_id=bot.gateway_id,
    )
    return False


@dataclass(frozen=True)
class Reached:
    """Where a report took a bot, for the audit's final rows (``audit/events.py``, ``record_command_done``)."""

    bot_id: uuid.UUID
    state: str  # the new actual state, "closed" (one trade closed) or "flat" (its last open trade closed)
    reason: str | None = None


async def apply(session: AsyncSession, message: Envelope) -> list[Reached]:
    """Apply one report; where it took the bot (a state it had not before, a trade closed)."""
    if isinstance(message, TradeOpened | TradeClosed):
        recorded = await _record_trade(session, message)
        return [Reached(message.data.bot_id, "closed")] if recorded and isinstance(message, TradeClosed) else []
    if isinstance(message, EmergencyStopCompleted):
        for outcome in message.data.results:
            bot = await session.get(Bot, outcome.bot_id, with_for_update=True)
            if bot is not None and _from_its_gateway(bot, message) and outcome.outcome in ("halted", "not_running"):
                bot.actual_state = ActualState.halted.value
                bot.last_error = outcome.detail
        return []
    if isinstance(message, CommandAccepted):
        bot = await _current(session, message, None)
        settled = (
            bot is not None
            and message.data.command_type == "UPDATE_CONFIG"
            and settle_live_change(bot, message.data.command_id, accepted=True) is not None
        )
        if settled and bot is not None and (bot.last_error or "").startswith("UPDATE_CONFIG refused"):
            bot.last_error = None  # a later live change went through: the earlier refusal is history
        if bot is not None and message.data.command_type == "MIGRATE_TRADE_DB" and bot.trade_db == "migrating":
            bot.trade_db = "postgres"  # copied and checked: it starts on PostgreSQL from now on (botdb/migrate.py)
        return []
    if isinstance(message, CommandRejected):
        bot = await _current(session, message, None)
        if bot is not None:
            bot.last_error = f"{message.data.command_type} refused by the gateway: {message.data.reason}"
            if message.data.command_type == "UPDATE_CONFIG" and settle_live_change(
                bot, message.data.command_id, accepted=False
            ):
                bot.last_error += "; the bot runs on with its previous pairs, stake and max open trades"
            if message.data.command_type == "MIGRATE_TRADE_DB" and bot.trade_db == "migrating":
                bot.trade_db = "sqlite"  # its trades stay where they were; a new migration starts over
            starting = (ActualState.starting, ActualState.unknown, ActualState.lost)
            if message.data.command_type in ("START_BOT", "RESTART_BOT") and bot.actual_state in starting:
                bot.actual_state = ActualState.failed.value
        return []
    generation: int | None = getattr(message.data, "generation", None)
    bot = await _current(session, message, generation)
    if bot is None:
        return []
    was: str | None = bot.actual_state
    reached: list[Reached] = []
    outdated = (
        generation is not None
        and bot.reported_generation == generation
        and bot.reported_at is not None
        and message.occurred_at < bot.reported_at
    )
    if isinstance(message, BotStarted | BotStopped | BotFailed):
        if outdated:
            log.info(
                "report older than the bot's newest: state left as is",
                bot_id=str(bot.id),
                message_type=message.type,
                occurred_at=message.occurred_at.isoformat(),
                newest=bot.reported_at.isoformat() if bot.reported_at else None,
            )
            return []
        bot.reported_generation, bot.reported_at = generation, message.occurred_at
    if isinstance(message, BotStarted):
        bot.actual_state = ActualState.running.value
        bot.started_at = message.data.started_at
        bot.launcher = message.data.launcher
        bot.gateway_id = message.source.removeprefix("gateway:") or bot.gateway_id
        bot.last_error = None
        was = None  # a new process: running again is news even if the last report said running
    elif isinstance(message, BotStopped):
        halted = bot.desired_state == DesiredState.halted
        bot.actual_state = (ActualState.halted if halted else ActualState.stopped).value
    elif isinstance(message, BotFailed):
        bot.actual_state = ActualState.failed.value
        bot.last_error = message.data.reason
    elif isinstance(message, BotStatus):
        if bot.last_status_at is not None and message.occurred_at <= bot.last_status_at:
            return []
        had_trades = bool((bot.last_status or {}).get("open_trades"))
        bot.last_status = {
            "state": message.data.state,
            "open_trades": message.data.open_trades,
            "profit": message.data.profit,
        }
        bot.last_status_at = message.occurred_at
        if had_trades and not message.data.open_trades:
            reached.append(Reached(bot.id, "flat"))
        if (
            (state := FREQTRADE_STATES.get(message.data.state)) is not None
            and not outdated
            and bot.actual_state not in (ActualState.stopping, ActualState.halted)
        ):
            bot.actual_state = state.value
    if bot.actual_state != was:
        reached.append(Reached(bot.id, bot.actual_state, bot.last_error))
    return reached


async def _record_trade(session: AsyncSession, message: TradeOpened | TradeClosed) -> bool:
    data = message.data
    values: dict[str, Any] = {
        "bot_id": data.bot_id,
        "trade_id": data.trade_id,
        "pair": data.pair,
        "is_short": data.is_short,
        "is_open": isinstance(message, TradeOpened),
        "open_date": data.open_date,
        "open_rate": data.open_rate,
        "amount": data.amount,
        "stake_amount": data.stake_amount,
        "enter_tag": data.enter_tag,
    }
    if isinstance(message, TradeClosed):
        closed = message.data
        values |= {
            "close_date": closed.close_date,
            "close_rate": closed.close_rate,
            "profit_abs": closed.profit_abs,
            "profit_ratio": closed.profit_ratio,
            "exit_reason": closed.exit_reason,
        }
    bot = await session.get(Bot, data.bot_id)
    if bot is None:
        log.info("trade of an unknown bot", bot_id=str(data.bot_id))
        return False
    if not _from_its_gateway(bot, message):
        return False
    statement = insert(Trade).values(**values)
    if isinstance(message, TradeClosed):
        update = {k: statement.excluded[k] for k in values if k not in ("bot_id", "trade_id")}
        await session.execute(statement.on_conflict_do_update(constraint="uq_trades_bot_id_trade_id", set_=update))
    else:
        # An "opened" that arrives after its "closed" must not reopen the trade.
        await session.execute(statement.on_conflict_do_nothing(constraint="uq_trades_bot_id_trade_id"))
    return True
