"""Changing what a bot should be doing: desired state, generation, placement, and the command.

Every action sets the desired state, bumps the bot's generation and writes the command to
the outbox in the same transaction, so the database and the bus never disagree. A start
places the bot on the live gateway with the most free capacity (from heartbeats); a bot
keeps its gateway afterwards. If that gateway is not answering, the command waits in its
stream and runs when it is back; the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.dml import ReturningInsert

from management_server.analytics.rearm import rearm
from management_server.audit.models import AuditEntry, Outcome
from management_server.botdb import service as botdb
from management_server.bots import changes as bot_changes
from management_server.bots.models import ActualState, Bot, DesiredState, Trade
from management_server.bus.models import OutboxMessage
from management_server.bus.service import enqueue, outbox_row
from management_server.credentials import service as credentials
from management_server.credentials.models import ExchangeCredential
from management_server.errors import Refused
from management_server.gateways.models import Gateway
from management_server.gateways.service import IS_LIVE, LIVE_WINDOW, is_live, live_gateways
from management_server.security.crypto import MasterKeys
from management_server.strategies.models import Strategy, StrategyStatus
from management_server.users.models import Role, User
from shared.bus.messages import (
    BotSpec,
    Envelope,
    ForceExit,
    ForceExitData,
    ModelBundle,
    PauseBot,
    PauseBotData,
    RestartBot,
    RestartBotData,
    ResumeBot,
    ResumeBotData,
    StartBot,
    StartBotData,
    StopBot,
    StopBotData,
    UpdateConfig,
    UpdateConfigData,
)
from shared.bus.streams import commands_stream
from shared.sealing import seal_credentials

if TYPE_CHECKING:
    from management_server.deps import RequestAudit

SOURCE = "management"
# Core statements on the tables (``_write``): the mapped classes would take the ORM's bulk paths, which cost more.
_BOTS, _OUTBOX, _AUDIT = (cast(Table, model.__table__) for model in (Bot, OutboxMessage, AuditEntry))


class Action(StrEnum):
    start = "start"
    stop = "stop"
    restart = "restart"
    pause = "pause"
    resume = "resume"
    forceexit = "forceexit"


class ActionRefused(Refused):
    """An action on a bot that can't be taken now."""


@dataclass(frozen=True)
class ActionResult:
    bot: Bot
    command: Envelope
    gateway_id: str
    notice: str | None


async def approved_strategy(session: AsyncSession, bot: Bot) -> Strategy:
    """The bot's strategy, when it may run (:class:`ActionRefused` 409 says why not)."""
    strategy = await session.get(Strategy, bot.strategy_id)
    if strategy is None:
        raise ActionRefused(409, "The bot's strategy no longer exists: give the bot another one.")
    if strategy.status != StrategyStatus.approved:
        raise ActionRefused(
            409, f"The strategy {strategy.name!r} is {strategy.status.replace('_', ' ')}: an admin must approve it."
        )
    return strategy


async def bot_spec(session: AsyncSession, bot: Bot, keys: MasterKeys, gateway_id: str) -> BotSpec:
    """The spec for gateway ``gateway_id``: a live bot's credentials are sealed to that gateway's key."""
    strategy = await approved_strategy(session, bot)
    secrets = None
    if not bot.dry_run:
        row = await session.get(ExchangeCredential, bot.credentials_id) if bot.credentials_id else None
        if row is None:
            raise ActionRefused(409, "A live bot needs its exchange credentials: they were deleted.")
        gateway_key = await sealing_key(session, gateway_id, "a live bot's exchange credentials")
        secrets = seal_credentials(
            gateway_key, gateway_id, bot.id, credentials.revision(row), credentials.reveal(keys, row)
        )
    database = None
    if bot.trade_db == "postgres":
        stored = await botdb.of(session, bot.id)
        if stored is None:
            raise ActionRefused(409, "The bot's trade database is not recorded: its trades can't be reached.")
        gateway_key = await sealing_key(session, gateway_id, "a bot's trade database password")
        database = botdb.sealed_for(keys, stored, gateway_id, gateway_key)
    uploader = await session.get(User, strategy.owner_id)
    return BotSpec(
        name=bot.name,
        strategy_class=strategy.class_name,
        strategy_source=strategy.source,
        strategy_trusted=uploader is not None and uploader.role == Role.admin,
        exchange=bot.exchange,
        pairs=list(bot.pairs),
        timeframe=bot.timeframe,
        stake_currency=bot.stake_currency,
        stake_amount="unlimited" if bot.stake_amount is None else bot.stake_amount,
        max_open_trades=bot.max_open_trades,
        dry_run=bot.dry_run,
        dry_run_wallet=bot.dry_run_wallet,
        stoploss=bot.stoploss,
        freqai=bot.freqai,
        credentials=secrets,
        database=database,
    )


async def sealing_key(session: AsyncSession, gateway_id: str, what: str) -> str:
    """The public key gateway ``gateway_id`` opens sealed secrets with (:class:`ActionRefused` when not enrolled)."""
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None or gateway.sealing_key is None or not gateway.enrolled:
        raise ActionRefused(
            409,
            f"Gateway {gateway_id} is not enrolled (or was revoked): {what} goes only to an enrolled gateway, sealed "
            "to its key. Enroll it (freqfleet gateways enroll) or move the bot.",
        )
    return gateway.sealing_key


WITH_PROCESS = (ActualState.running, ActualState.paused, ActualState.starting, ActualState.stopping)


async def _placement(session: AsyncSession, bot: Bot) -> tuple[str, str | None]:
    """The gateway for a start, and a notice when it is not answering."""
    now = datetime.now(UTC)
    live = await live_gateways(session, now)
    pinned = bot.pinned_gateway_id
    if bot.gateway_id is not None and (pinned is None or pinned == bot.gateway_id):
        if any(g.gateway_id == bot.gateway_id for g in live):
            return bot.gateway_id, None
        if bot.actual_state in (ActualState.running, ActualState.paused, ActualState.starting) or not live:
            # Its process may still run there: the command waits for that gateway.
            return bot.gateway_id, _waiting(bot.gateway_id)
    if pinned is not None:  # its gateway, drained or not, answering or not (the command waits for it)
        if bot.gateway_id not in (None, pinned) and bot.actual_state in WITH_PROCESS:
            raise ActionRefused(
                409,
                f"It was pinned to gateway {pinned} while it ran on {bot.gateway_id}: stop it first, then start it "
                f"(it starts on {pinned}).",
            )
        answering = await is_live(session, pinned)  # a drained gateway is left out of ``live`` but answers
        return pinned, None if answering else _waiting(pinned)
    if live:
        return live[0].gateway_id, None
    enrolled = select(Gateway).where(
        Gateway.signing_key.is_not(None), Gateway.revoked_at.is_(None), Gateway.last_seen_at.is_not(None)
    )
    last = (await session.execute(enrolled.order_by(Gateway.last_seen_at.desc()).limit(1))).scalar_one_or_none()
    if last is None:
        raise ActionRefused(
            503,
            "No enrolled trading gateway has reported: start one (freqfleet gateway) and enroll it "
            "(freqfleet gateways enroll).",
        )
    return last.gateway_id, _waiting(last.gateway_id)


def _waiting(gateway_id: str) -> str:
    return (
        f"Gateway {gateway_id} has not reported for over {int(LIVE_WINDOW.total_seconds())} s: "
        "the command is queued and runs when it is back."
    )


def _command(
    action: Action,
    bot: Bot,
    spec: BotSpec | None,
    trade_id: int | str | None,
    freqai_model: ModelBundle | None = None,
) -> Envelope:
    g = bot.generation
    if action is Action.start:
        assert spec is not None
        return StartBot(
            source=SOURCE, data=StartBotData(bot_id=bot.id, generation=g, spec=spec, freqai_model=freqai_model)
        )
    if action is Action.stop:
        return StopBot(source=SOURCE, data=StopBotData(bot_id=bot.id, generation=g))
    if action is Action.restart:
        return RestartBot(source=SOURCE, data=RestartBotData(bot_id=bot.id, generation=g))
    if action is Action.pause:
        return PauseBot(source=SOURCE, data=PauseBotData(bot_id=bot.id, generation=g))
    if action is Action.resume:
        return ResumeBot(source=SOURCE, data=ResumeBotData(bot_id=bot.id, generation=g))
    return ForceExit(
        source=SOURCE,
        data=ForceExitData(bot_id=bot.id, generation=g, trade_id=trade_id),
    )


async def open_trade_ids(session: AsyncSession, bot: Bot) -> set[int]:
    """The bot's open trades as its gateway last reported them: the trades recorded open, and those its latest
    status lists that no trade event has told of yet."""
    rows = await session.execute(select(Trade.trade_id, Trade.is_open).where(Trade.bot_id == bot.id))
    recorded: dict[int, bool] = {trade_id: is_open for trade_id, is_open in rows.all()}
    known = {trade_id for trade_id, is_open in recorded.items() if is_open}
    for trade in (bot.last_status or {}).get("open_trades") or []:
        if isinstance(trade, dict) and isinstance(trade.get("trade_id"), int) and trade["trade_id"] not in recorded:
            known.add(trade["trade_id"])
    return known


DESIRED = {
    Action.start: DesiredState.running,
    Action.restart: DesiredState.running,
    Action.resume: DesiredState.running,
    Action.pause: DesiredState.paused,
    Action.stop: DesiredState.stopped,
}


async def act(
    session: AsyncSession,
    bot: Bot,
    action: Action,
    keys: MasterKeys,
    trade_id: int | str | None = None,
    freqai_model: ModelBundle | None = None,
    audit: RequestAudit | None = None,
    place_on: str | None = None,
) -> ActionResult:
    """Apply ``action`` to ``bot`` in the session's transaction (the caller commits). A start of a FreqAI bot
    carries its model (``freqai_model``, from ``management_server.freqai.deploy.start_bundle``). A person's action
    is audited as ``requested`` by ``audit`` (its ``command_id``: the gateway's answer completes it), written with
    the change and the command."""
    active = bot.desired_state in (DesiredState.running, DesiredState.paused)
    spec = None
    changes: dict[str, Any] = {}  # the bot's columns this action sets (written by _write)
    if action is Action.start:
        if bot.trade_db == "migrating":
            raise ActionRefused(
                409, "The bot's trades are being copied to PostgreSQL (migrate-db): start it once its gateway answers."
            )
        await approved_strategy(session, bot)  # what the user can fix comes before where it would run
        if place_on is not None:  # the failover's choice (bots/failover.py): a live gateway
            gateway_id, notice = place_on, None
        else:
            gateway_id, notice = await _placement(session, bot)  # which says whether the gateway is answering
        spec = await bot_spec(session, bot, keys, gateway_id)
        changes["gateway_id"], changes["last_error"] = gateway_id, None
        if place_on is not None or bot.actual_state in (ActualState.stopped, ActualState.failed, ActualState.halted):
            # a move (failover) starts a new process elsewhere: it runs once that gateway says so, not before
            changes["actual_state"] = ActualState.starting.value
    elif not active or bot.gateway_id is None:
        raise ActionRefused(409, "The bot is not running: start it first.")
    elif action is Action.forceexit and isinstance(trade_id, int):
        gateway_id = bot.gateway_id
        known = await open_trade_ids(session, bot)
        if trade_id not in known:
            listed = ", ".join(str(t) for t in sorted(known)) or "none"
            raise ActionRefused(
                404, f"The bot has no open trade {trade_id} (its open trades, as last reported: {listed})."
            )
    else:
        gateway_id = bot.gateway_id
        if action is Action.restart:
            await bot_spec(session, bot, keys, gateway_id)  # the same checks as a start
    if action in (Action.start, Action.resume):
        await rearm(session, bot)  # a trader trading again after a risk pause: the guard starts over from now
    if action in DESIRED:
        changes["desired_state"] = DESIRED[action].value
    if action is Action.stop and bot.actual_state in (ActualState.running, ActualState.paused, ActualState.starting):
        changes["actual_state"] = ActualState.stopping.value
    if action is not Action.forceexit:
        # FORCE_EXIT changes no desired state, and the gateway records no generation for it: bumping the
        # generation here would make every later report of the bot look older than it and be dropped.
        changes["generation"] = bot.generation + 1
    now = datetime.now(UTC)
    changes |= {"updated_at": now, "commanded_at": now, "reconcile_attempts": 0}  # the reconciler's backoff restarts
    for key, value in changes.items():  # the bot as written below (not a change for the session to flush)
        set_committed_value(bot, key, value)
    command = _command(action, bot, spec, trade_id, freqai_model)
    requested = None
    if audit is not None:
        requested = audit.row(
            f"bot.{action.value}",
            Outcome.requested,
            target_type="bot",
            target_id=bot.id,
            details={"generation": bot.generation, "gateway_id": gateway_id, "trade_id": trade_id},
            command_id=command.event_id,
        )
    live = await _write(session, bot, changes, gateway_id, command, requested)
    if action is not Action.start:
        notice = None if live else _waiting(gateway_id)
    return ActionResult(bot, command, gateway_id, notice)


async def _write(
    session: AsyncSession,
    bot: Bot,
    changed: dict[str, Any],
    gateway_id: str,
    command: Envelope,
    audit: dict[str, Any] | None,
) -> bool:
    """The bot's ``changed`` columns, the command's outbox row (to ``gateway_id``) and the audit's ``requested`` row
    in one statement (one round trip, no unit-of-work flush), and the bot noted as changed (``changes``). Returns
    whether the gateway is live (``gateways.service.is_live``), asked in the same statement."""
    outbox = outbox_row(commands_stream(gateway_id), command)
    params = {f"outbox_{k}": v for k, v in outbox.items()} | {f"bot_{k}": v for k, v in changed.items()}
    params |= {f"audit_{k}": v for k, v in (audit or {}).items()}
    params |= {"bot_id": bot.id, "live_gateway_id": gateway_id, "live_since": datetime.now(UTC) - LIVE_WINDOW}
    live = await session.scalar(_statement(tuple(outbox), tuple(changed), tuple(audit or ())), params)
    bot_changes.note(session, {bot.id: bot.owner_id})
    return bool(live)


@lru_cache(maxsize=128)
def _statement(outbox: tuple[str, ...], changed: tuple[str, ...], audit: tuple[str, ...]) -> ReturningInsert[Any]:
    """``_write``'s statement for these columns, built once (its parameters named ``<table>_<column>``)."""

    def values(table: Table, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
        return {name: bindparam(f"{prefix}_{name}", type_=table.c[name].type) for name in columns}

    statement = insert(_OUTBOX).values(values(_OUTBOX, "outbox", outbox))
    if changed:
        update_bot = update(_BOTS).where(_BOTS.c.id == bindparam("bot_id")).values(values(_BOTS, "bot", changed))
        statement = statement.add_cte(update_bot.cte("bot_changed"))
    if audit:
        statement = statement.add_cte(insert(_AUDIT).values(values(_AUDIT, "audit", audit)).cte("audit_requested"))
    return statement.returning(IS_LIVE.scalar_subquery())


async def update_live(session: AsyncSession, bot: Bot, keys: MasterKeys) -> ActionResult | None:
    """Send a running bot its changed settings (UPDATE_CONFIG); None when the bot is not running."""
    if bot.desired_state not in (DesiredState.running, DesiredState.paused) or bot.gateway_id is None:
        return None
    spec = await bot_spec(session, bot, keys, bot.gateway_id)
    bot.generation += 1
    bot.commanded_at = datetime.now(UTC)
    command = UpdateConfig(source=SOURCE, data=UpdateConfigData(bot_id=bot.id, generation=bot.generation, spec=spec))
    await enqueue(session, commands_stream(bot.gateway_id), command)
    live = await is_live(session, bot.gateway_id)
    return ActionResult(bot, command, bot.gateway_id, None if live else _waiting(bot.gateway_id))
