"""Moving a SQLite bot's trades into a PostgreSQL database of its own (``freqfleet bots migrate-db``).

The bot must be stopped (no process writes its trades meanwhile). Its database is made (a failed copy's leftover is
dropped first), its ``trade_db`` becomes ``migrating`` (it can't start meanwhile), and MIGRATE_TRADE_DB goes to the
gateway that holds its folder, with the database's URL sealed to that gateway. The gateway copies and checks every
row (:mod:`trading_gateway.fleet.trade_db`); its answer settles it (``bots/events.py``): ``postgres`` when it took
the command (the rows it copied are in the audit log's ``accepted`` row), back to ``sqlite`` with the reason in
``last_error`` when it refused. A bot that never ran has no trades anywhere: it moves at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import Outcome
from management_server.botdb import service as botdb
from management_server.botdb.service import BotDatabaseRefused, Provisioner
from management_server.bots.lifecycle import SOURCE, sealing_key
from management_server.bots.models import Bot
from management_server.bots.service import is_stopped
from management_server.bus.service import enqueue
from management_server.gateways.service import is_live
from management_server.security.crypto import MasterKeys
from shared.bus.messages import MigrateTradeDb, MigrateTradeDbData
from shared.bus.streams import commands_stream

if TYPE_CHECKING:
    from management_server.deps import RequestAudit

ACTION = "bot.migrate_trade_db"


@dataclass(frozen=True)
class Migration:
    bot: Bot
    command: MigrateTradeDb | None  # None: nothing to copy, the bot moved at once
    notice: str | None


async def migrate(
    session: AsyncSession, bot: Bot, keys: MasterKeys, provisioner: Provisioner | None, audit: RequestAudit
) -> Migration:
    """Start moving the (locked) bot's trades to PostgreSQL, in the session's transaction (the caller commits)."""
    if bot.trade_db == "postgres":
        raise BotDatabaseRefused(409, "The bot's trades are in PostgreSQL already.")
    if bot.trade_db == "migrating":
        raise BotDatabaseRefused(409, "The bot's trades are being copied to PostgreSQL: wait for its gateway's answer.")
    if provisioner is None:
        raise BotDatabaseRefused(
            409,
            "This management server makes no bot databases: set FREQFLEET_BOT_DB=postgres and "
            "FREQFLEET_BOT_DB_ADMIN_URL (freqfleet up does), then migrate.",
        )
    if not is_stopped(bot):
        raise BotDatabaseRefused(409, "Stop the bot first: its trades are copied while no process writes them.")
    leftover = await botdb.of(session, bot.id)
    if leftover is not None:  # an earlier copy that failed: start again from an empty database
        await provisioner.drop(leftover.name)
        await session.delete(leftover)
        await session.flush()
    row = await botdb.provision(session, keys, provisioner, bot)
    details: dict[str, object] = {"database": row.name, "gateway_id": bot.gateway_id}
    if bot.gateway_id is None:
        bot.trade_db = "postgres"
        audit.add(session, ACTION, Outcome.success, target_type="bot", target_id=bot.id, details=details)
        return Migration(bot, None, None)
    database = botdb.sealed_for(keys, row, bot.gateway_id, await sealing_key(session, bot.gateway_id, "its database"))
    bot.trade_db = "migrating"
    bot.generation += 1
    bot.commanded_at = datetime.now(UTC)
    bot.last_error = None
    command = MigrateTradeDb(
        source=SOURCE, data=MigrateTradeDbData(bot_id=bot.id, generation=bot.generation, database=database)
    )
    await enqueue(session, commands_stream(bot.gateway_id), command)
    details |= {"generation": bot.generation}
    audit.add(
        session,
        ACTION,
        Outcome.requested,
        target_type="bot",
        target_id=bot.id,
        details=details,
        command_id=command.event_id,
    )
    live = await is_live(session, bot.gateway_id)
    notice = None if live else f"Gateway {bot.gateway_id} is not answering: the copy runs when it is back."
    return Migration(bot, command, notice)
