"""Creating and changing bots: every rule a bot's settings must follow, with reasons a person can act on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.botdb import service as botdb
from management_server.botdb.models import BotDatabase
from management_server.botdb.service import Provisioner
from management_server.bots.lifecycle import ActionResult, update_live
from management_server.bots.markets import Markets, unknown_pairs
from management_server.bots.models import ActualState, Bot, DesiredState, Trade
from management_server.bots.schemas import BotCreate, BotUpdate, LiveStatusOut
from management_server.credentials import service as credentials
from management_server.errors import Refused
from management_server.freqai import service as models
from management_server.gateways.models import Gateway
from management_server.security.crypto import MasterKeys
from management_server.strategies import service as strategies
from management_server.users.viewer import Viewer
from shared.exchange import SIMULATOR


class BotRefused(Refused):
    """A bot can't be created or changed as asked."""


async def visible(session: AsyncSession, viewer: Viewer, bot_id: uuid.UUID, *, lock: bool = False) -> Bot | None:
    """The bot if this viewer may see it: their own, or any for an admin. Otherwise as if it did not exist.

    ``lock`` for a change: the row stays locked until the transaction ends, so a gateway's answer applied
    meanwhile (``bots/events.py`` locks it too) is not overwritten with what this request read before it."""
    bot = await session.get(Bot, bot_id, with_for_update=lock)
    if bot is None or not viewer.may_see(bot.owner_id):
        return None
    return bot


async def trades(session: AsyncSession, bot_id: uuid.UUID, limit: int, offset: int) -> list[Trade]:
    """The bot's trades as its gateway reported them, newest first."""
    rows = await session.execute(
        select(Trade).where(Trade.bot_id == bot_id).order_by(Trade.open_date.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars())


FREQTRADE_DRY_RUN_WALLET = Decimal(1000)  # Freqtrade's dry_run_wallet when a config names none


def _check_pairs(pairs: list[str], stake_currency: str) -> None:
    wrong = [p for p in pairs if p.split(":")[0].split("/")[1] != stake_currency]
    if wrong:
        raise BotRefused(400, f"pairs {', '.join(wrong)} are not quoted in the stake currency {stake_currency}")


def _check_markets(pairs: list[str], exchange: str, known: frozenset[str] | None) -> None:
    if missing := unknown_pairs(pairs, known):
        assert known is not None
        listed = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
        raise BotRefused(400, f"{', '.join(missing)} not traded on {exchange}: it trades {listed}.")


def _check_stake(stake: Decimal | None, dry_run: bool, wallet: Decimal | None, stake_currency: str) -> None:
    """A dry-run bot's stake per trade fits its simulated wallet (a live bot's wallet is the exchange's)."""
    if stake is None or not dry_run:
        return
    funds = wallet if wallet is not None else FREQTRADE_DRY_RUN_WALLET
    if stake > funds:
        source = "its dry_run_wallet" if wallet is not None else "the default dry-run wallet (dry_run_wallet unset)"
        raise BotRefused(
            400,
            f"stake_amount {stake:f} {stake_currency} is more than {source} of {funds:f} {stake_currency}: "
            "lower the stake, or create the bot with a larger dry_run_wallet.",
        )


async def create(
    session: AsyncSession, viewer: Viewer, body: BotCreate, known_pairs: frozenset[str] | None = None
) -> Bot:
    """A stopped bot; ``known_pairs``: what its exchange trades (``markets.Markets``), None when not known."""
    owner = viewer.user
    strategy = await strategies.visible(session, viewer, body.strategy_id)
    if strategy is None:
        raise BotRefused(404, "No such strategy.")
    _check_pairs(list(body.pairs), body.stake_currency)
    _check_markets(list(body.pairs), body.exchange, known_pairs)
    stake = None if body.stake_amount == "unlimited" else Decimal(body.stake_amount)
    _check_stake(stake, body.dry_run, body.dry_run_wallet, body.stake_currency)
    if not body.dry_run:
        if not viewer.admin:
            raise BotRefused(403, "Only an admin may create a live (dry_run: false) bot.")
        if body.exchange == SIMULATOR:
            raise BotRefused(400, "The exchange simulator has no private API: a live bot needs a real exchange.")
        if body.credentials_id is None:
            raise BotRefused(400, "A live bot needs credentials_id: store the exchange's API keys first.")
    if body.credentials_id is not None:
        credential = await credentials.own(session, owner.id, body.credentials_id)
        if credential is None:
            raise BotRefused(404, credentials.NOT_FOUND)
        if credential.exchange != body.exchange:
            raise BotRefused(400, f"These credentials are for {credential.exchange}, not {body.exchange}.")
    pinned = None if body.placement is None else await _pin(session, viewer, body.placement.gateway_id)
    freqai = body.freqai
    if body.model_id is not None:  # a FreqAI bot that receives this model (management_server/freqai)
        model = await models.visible(session, viewer, body.model_id)
        if model is None:
            raise BotRefused(404, "No such model.")
        problem = models.fit_problem(
            model, timeframe=body.timeframe, pairs=list(body.pairs), strategy_class=strategy.class_name
        )
        if problem is not None:
            raise BotRefused(409, f"This model can't serve the bot: {problem}.")
        freqai = {} if freqai is None else freqai
    bot = Bot(
        owner_id=owner.id,
        name=body.name,
        strategy_id=body.strategy_id,
        exchange=body.exchange,
        pairs=list(body.pairs),
        timeframe=body.timeframe,
        stake_currency=body.stake_currency,
        stake_amount=stake,
        max_open_trades=body.max_open_trades,
        dry_run=body.dry_run,
        dry_run_wallet=body.dry_run_wallet,
        stoploss=body.stoploss,
        credentials_id=body.credentials_id,
        freqai=freqai,
        model_id=body.model_id,
        max_drawdown_ratio=body.max_drawdown_ratio,
        pinned_gateway_id=pinned,
        desired_state=DesiredState.stopped.value,
        actual_state=ActualState.stopped.value,
        generation=0,
    )
    session.add(bot)
    await session.flush()
    return bot


def _may_pin(viewer: Viewer) -> None:
    if not viewer.admin:
        raise BotRefused(
            403,
            "Only an admin may pin a bot to a gateway (placement): leave it out and the bot runs where there is room.",
        )


async def _pin(session: AsyncSession, viewer: Viewer, gateway_id: str) -> str:
    """The gateway a bot may be pinned to: an admin's choice, of an enrolled gateway."""
    _may_pin(viewer)
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None or not gateway.enrolled:
        raise BotRefused(
            404, f"No enrolled gateway {gateway_id}: pin the bot to one that `freqfleet gateways list` shows enrolled."
        )
    return gateway_id


async def create_committed(
    session: AsyncSession,
    viewer: Viewer,
    body: BotCreate,
    known_pairs: frozenset[str] | None,
    keys: MasterKeys,
    databases: Provisioner | None,
) -> Bot:
    """:func:`create`, with its trade database when the bots' trades are in PostgreSQL, committed; a bot that is not
    committed (a name taken) leaves no database behind."""
    made: BotDatabase | None = None
    try:
        bot = await create(session, viewer, body, known_pairs)
        if databases is not None:
            made = await botdb.provision(session, keys, databases, bot)
        await session.commit()
    except BaseException:
        if databases is not None and made is not None:
            await botdb.forget(databases, made.bot_id)
        raise
    return bot


async def delete_committed(session: AsyncSession, bot: Bot, databases: Provisioner | None) -> Path | None:
    """Delete the (stopped) bot: its trade database backed up first (the backup's path), the bot deleted and
    committed, then the database dropped (a database that can't be dropped then is left behind, logged, never a bot
    without its trades)."""
    database = await botdb.of(session, bot.id)
    backup = None if database is None else await botdb.backup_before_delete(databases, database)
    await session.delete(bot)
    await session.commit()
    if database is not None and databases is not None and backup is not None:
        await botdb.drop_after_delete(databases, database, backup)
    return backup


def is_stopped(bot: Bot) -> bool:
    return bot.desired_state in (DesiredState.stopped, DesiredState.halted) and bot.actual_state in (
        ActualState.stopped,
        ActualState.failed,
        ActualState.halted,
    )


LIVE_FIELDS = frozenset({"pairs", "stake_amount", "max_open_trades"})
# the gateway never sees them: changed at any time (a new placement counts from the bot's next start)
MANAGEMENT_FIELDS = frozenset({"max_drawdown_ratio", "placement"})
NULLABLE_FIELDS = frozenset({"stoploss", "max_drawdown_ratio", "placement"})  # null means "the default"


def update(bot: Bot, body: BotUpdate, known_pairs: frozenset[str] | None = None) -> dict[str, object]:
    """Apply the changes; the changed fields, for the audit log.

    A running bot takes new pairs, stake and max open trades live (the caller sends
    UPDATE_CONFIG); anything else needs the bot stopped first."""
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        return {}
    if not is_stopped(bot) and not set(changes) <= LIVE_FIELDS | MANAGEMENT_FIELDS:
        others = ", ".join(sorted(set(changes) - LIVE_FIELDS - MANAGEMENT_FIELDS))
        raise BotRefused(
            409,
            f"Stop the bot before changing {others}: a running bot takes only pairs, "
            "stake_amount and max_open_trades live.",
        )
    if "pairs" in changes and changes["pairs"] is not None:
        _check_pairs(list(changes["pairs"]), bot.stake_currency)
        _check_markets(list(changes["pairs"]), bot.exchange, known_pairs)
    if changes.get("stake_amount") not in (None, "unlimited"):
        _check_stake(Decimal(changes["stake_amount"]), bot.dry_run, bot.dry_run_wallet, bot.stake_currency)
    for field, value in changes.items():
        if value is None and field not in NULLABLE_FIELDS:
            continue
        if field == "stake_amount":
            value = None if value == "unlimited" else Decimal(value)
        if field == "placement":  # checked by change() (_pin)
            field, value = "pinned_gateway_id", None if value is None else value["gateway_id"]
        setattr(bot, field, value)
    return {k: str(v) for k, v in changes.items()}


@dataclass(frozen=True)
class Change:
    changes: dict[str, object]  # the changed fields, for the audit log
    live: ActionResult | None  # the UPDATE_CONFIG sent to the running bot; None when none was needed

    def details(self, bot: Bot) -> dict[str, object]:
        return self.changes | ({"live": True, "generation": bot.generation} if self.live else {})


async def change(
    session: AsyncSession, viewer: Viewer, bot: Bot, body: BotUpdate, markets: Markets, keys: MasterKeys
) -> Change:
    """Apply the changes (:func:`update`) in the session's transaction (the caller commits). A running bot gets
    those it takes live by UPDATE_CONFIG (``live``), remembered until its gateway answers: they are put back if
    it refuses them, the database says what runs."""
    if "placement" in body.model_fields_set:
        if body.placement is not None:
            await _pin(session, viewer, body.placement.gateway_id)
        elif bot.pinned_gateway_id is not None:
            _may_pin(viewer)
    before = live_values(bot)
    known = await markets.pairs(bot.exchange) if body.pairs is not None else None
    changes = update(bot, body, known)
    live = await update_live(session, bot, keys) if set(changes) - MANAGEMENT_FIELDS else None
    if live is not None:
        note_live_change(bot, live.command.event_id, before)
    return Change(changes, live)


def live_values(bot: Bot) -> dict[str, Any]:
    """The fields a running bot takes live, as JSON (what ``restore_live_values`` puts back)."""
    return {
        "pairs": list(bot.pairs),
        "stake_amount": None if bot.stake_amount is None else str(bot.stake_amount),
        "max_open_trades": bot.max_open_trades,
    }


def restore_live_values(bot: Bot, values: dict[str, Any]) -> None:
    bot.pairs = list(values["pairs"])
    bot.stake_amount = None if values["stake_amount"] is None else Decimal(values["stake_amount"])
    bot.max_open_trades = int(values["max_open_trades"])


def note_live_change(bot: Bot, command_id: uuid.UUID, running: dict[str, Any]) -> None:
    """Remember a live change sent to the gateway until it answers.

    ``pending_change`` holds what is known to run (``before``: the values before the first unanswered change, or
    those of the last one the gateway took) and each unanswered change with its values (``sent``, oldest first;
    every UPDATE_CONFIG carries the whole spec). ``running`` is the bot's live values before this change."""
    pending = bot.pending_change
    sent = list(pending.get("sent") or []) if pending else []
    before = pending["before"] if pending else running
    sent.append({"command_id": str(command_id), "values": live_values(bot)})
    bot.pending_change = {"command_id": str(command_id), "before": before, "sent": sent}


def settle_live_change(bot: Bot, command_id: uuid.UUID, accepted: bool) -> bool | None:
    """The gateway's answer to one of the bot's unanswered live changes; None when it answers none of them.

    A change it took becomes what runs (and the changes sent before it are settled: the gateway answers in order).
    When the latest change is refused, the bot's values go back to what runs, and True says so."""
    pending = bot.pending_change
    if pending is None:
        return None
    key = str(command_id)
    sent: list[dict[str, Any]] = list(pending.get("sent") or [{"command_id": pending["command_id"], "values": None}])
    at = next((i for i, change in enumerate(sent) if change["command_id"] == key), None)
    if at is None:
        return None
    before = pending["before"]
    if accepted:
        before = sent[at]["values"] or live_values(bot)
        del sent[: at + 1]
    else:
        del sent[at]
    if pending["command_id"] == key:  # the latest: nothing of this bot is unanswered any more
        if not accepted:
            restore_live_values(bot, before)
        bot.pending_change = None
        return not accepted
    bot.pending_change = {"command_id": pending["command_id"], "before": before, "sent": sent}
    return False


PROCESS_STATES = (ActualState.running, ActualState.paused, ActualState.stopping)


def live_status(bot: Bot) -> dict[str, Any] | None:
    """The last status report if it describes the bot's current process; None when no process runs (stopped,
    halted, failed, or a start not confirmed yet) or the report came from an earlier process.

    The report itself stays on the bot (its profit figures remain true of the bot's trades); only what
    it says of a process that has ended (its state, its open trades) must not read as live."""
    if bot.last_status is None or bot.last_status_at is None or bot.actual_state not in PROCESS_STATES:
        return None
    if bot.started_at is not None and bot.last_status_at < bot.started_at:
        return None
    return bot.last_status


def status_report(bot: Bot, stale_after: float) -> LiveStatusOut:
    """The latest live status with its age; a report older than ``stale_after`` seconds says nothing of now."""
    live = live_status(bot) or {}
    age = (datetime.now(UTC) - bot.last_status_at).total_seconds() if bot.last_status_at else None
    if live and age is not None and age > stale_after:
        live = {"state": "unknown"}
    return LiveStatusOut(
        state=live.get("state"),
        actual_state=bot.actual_state,
        open_trades=live.get("open_trades", []),
        profit=(bot.last_status or {}).get("profit", {}),
        updated_at=bot.last_status_at,
        age_seconds=age,
    )
