"""Failover: a bot whose gateway's lease on it has ended runs again on a live gateway, with its open trades.

Every ``failover_interval`` seconds (one replica at a time: a PostgreSQL advisory lock), for each gateway that holds
bots by leases (``shared/bus/leases.py``: its hash in Redis, which outlives it), every bot placed there that should
run (desired ``running`` or ``paused``) and whose lease there has ended (by Redis's clock) is moved:

1. its trades must be where every gateway reaches them (``trade_db: postgres``); a SQLite bot can't move with its
   open trades (they are on the lost host's disk): it reads ``lost``, with the reason, for a person;
2. a live gateway takes it: the least loaded one with free capacity (``gateways.service.live_gateways``), never the
   one it leaves nor any with a lease that ended (a frozen gateway's last heartbeat may still look recent); none: it
   waits for the next check. A bot pinned to its gateway (``placement``) is not moved: it
   reads ``orphaned``, with the reason, until that gateway reports it again or an admin unpins it;
3. its database role gets a new password and every session of the old one is ended
   (``botdb.service.rotate``): a stale holder that wakes up can't write its trades;
4. a START_BOT to the new gateway at the next generation (``lifecycle.act`` with ``place_on``), whose relay names the
   new holder before the command goes; the old gateway, if it comes back, finds the bot held elsewhere and stops it;
5. the move in the audit log (``bot.failover``, actor ``freqfleet:failover``: from, to, when the lease ended), with
   the start command's id, so the new gateway's answer completes it.

Freqtrade reads the open trades from the bot's database at its start: same trade ids, same open rates.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import Outcome
from management_server.audit.service import Actor
from management_server.botdb import service as botdb
from management_server.botdb.service import BotDatabaseRefused
from management_server.bots import changes
from management_server.bots.lifecycle import ActionRefused
from management_server.bots.models import ActualState, Bot, DesiredState
from management_server.bots.moves import Mover
from management_server.freqai.service import ModelRefused
from management_server.gateways.models import Gateway
from management_server.gateways.service import live_gateways
from shared.bus.leases import Leases, leases_of
from shared.logging import get_logger

log = get_logger(__name__)

ACTOR = Actor(None, "freqfleet:failover")
LOCK_KEY = 0x46726571_4661696C  # "FreqFail": one failover pass at a time over all replicas


@dataclass(frozen=True)
class Move:
    bot_id: uuid.UUID
    from_gateway: str
    to_gateway: str | None  # None: it could not move (why in ``detail``)
    detail: str
    command_id: uuid.UUID | None = None


def _stays(session: AsyncSession, bot: Bot, from_gateway: str, state: ActualState, why: str) -> Move | None:
    """A bot that can't be moved (SQLite: ``lost``; pinned: ``orphaned``) reads ``state`` with the reason, said once
    (the next passes find it so and say nothing)."""
    if bot.actual_state == state.value:
        return None
    bot.actual_state, bot.last_error = state.value, why
    changes.note(session, {bot.id: bot.owner_id})
    return Move(bot.id, from_gateway, None, why)


def _ended(leases: Leases) -> list[str]:
    """The bots whose lease on this gateway has ended, by Redis's clock."""
    return [bot_id for bot_id, lease in leases.held.items() if lease.expires_ms <= leases.now_ms]


class Failover(Mover):
    name = "failover"
    _lapsing: frozenset[str] | set[str] = frozenset()  # this pass: gateways with an ended lease (no place for a bot)

    async def tick(self) -> None:
        await self.pass_once()

    async def pass_once(self) -> list[Move]:
        """One check of every gateway's leases; the moves it made (or could not)."""
        moves: list[Move] = []
        async with self.sessionmaker.begin() as session:
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
                return []
            gateways = await session.execute(
                select(Gateway.gateway_id).where(Gateway.signing_key.is_not(None), Gateway.revoked_at.is_(None))
            )
            held: dict[str, Leases] = {}
            for gateway_id in gateways.scalars():
                leases = await leases_of(self.redis, gateway_id)
                if leases.held:  # a gateway that never held a lease (leases off) is not judged by them
                    held[gateway_id] = leases
            # A gateway with a lease that ended is no place for a bot, though its last heartbeat may still be recent
            # (frozen, cut off): it takes none of the moves.
            self._lapsing = {g for g, leases in held.items() if _ended(leases)}
            for gateway_id, leases in held.items():
                moves += await self._gateway(session, gateway_id, leases)
        if self.on_commands is not None and any(m.command_id is not None for m in moves):
            self.on_commands()
        return moves

    async def _gateway(self, session: AsyncSession, gateway_id: str, leases: Leases) -> list[Move]:
        ended = _ended(leases)
        if not ended:
            return []
        rows = await session.execute(
            select(Bot)
            .where(
                Bot.id.in_([uuid.UUID(b) for b in ended]),
                Bot.gateway_id == gateway_id,
                Bot.desired_state.in_([DesiredState.running.value, DesiredState.paused.value]),
            )
            .with_for_update()
        )
        moves = []
        for bot in rows.scalars():
            expired_at = datetime.fromtimestamp(leases.held[str(bot.id)].expires_ms / 1000, UTC)
            move = await self._move(session, bot, gateway_id, expired_at)
            if move is not None:
                moves.append(move)
        return moves

    async def _move(self, session: AsyncSession, bot: Bot, from_gateway: str, expired_at: datetime) -> Move | None:
        ended = f"its lease on gateway {from_gateway} ended at {expired_at.isoformat(timespec='seconds')}"
        if bot.trade_db != "postgres":
            why = (
                f"{ended}; its trades are in SQLite on that host, so it can't move with them: bring the host back, "
                "or move its trades to PostgreSQL (freqfleet bots migrate-db) to let it fail over"
            )
            return _stays(session, bot, from_gateway, ActualState.lost, why)
        live = [g for g in await live_gateways(session) if g.gateway_id not in self._lapsing]  # the least loaded first
        if bot.pinned_gateway_id is not None:
            if self.provisioner is not None and any(
                g.gateway_id == bot.pinned_gateway_id != from_gateway and g.capacity > 0 for g in live
            ):  # re-pinned while it ran elsewhere: where it is pinned, when that gateway is live
                return await self._start_on(session, bot, from_gateway, bot.pinned_gateway_id, expired_at, ended)
            why = (
                f"{ended}; it is pinned to gateway {bot.pinned_gateway_id}, so it is not moved: bring that gateway "
                "back, or unpin it (placement: null) to let it fail over"
            )
            return _stays(session, bot, from_gateway, ActualState.orphaned, why)
        if self.provisioner is None:
            return None  # no way to fence its database: left for a person (logged once per pass)
        target = next((g.gateway_id for g in live if g.gateway_id != from_gateway and g.capacity > 0), None)
        if target is None:
            log.warning("no live gateway to fail over to", bot_id=str(bot.id), from_gateway=from_gateway)
            return None
        return await self._start_on(session, bot, from_gateway, target, expired_at, ended)

    async def _start_on(
        self, session: AsyncSession, bot: Bot, from_gateway: str, target: str, expired_at: datetime, ended: str
    ) -> Move | None:
        if await botdb.of(session, bot.id) is None:
            return None
        paused = bot.desired_state == DesiredState.paused.value
        try:
            result, ended_sessions = await self.start_elsewhere(session, bot, target, paused=paused)
        except (BotDatabaseRefused, ActionRefused, ModelRefused) as exc:
            log.warning("failover refused", bot_id=str(bot.id), error=str(exc))
            return Move(bot.id, from_gateway, None, str(exc))
        detail = f"{ended}: started on gateway {target} at generation {bot.generation}"
        self.audit.add(
            session,
            "bot.failover",
            Outcome.requested,
            ACTOR,
            target_type="bot",
            target_id=bot.id,
            reason=detail,
            via="failover",
            details={
                "from_gateway": from_gateway,
                "to_gateway": target,
                "lease_ended_at": expired_at.isoformat(),
                "generation": bot.generation,
                "database_sessions_ended": ended_sessions,
            },
            command_id=result.command.event_id,
        )
        log.warning("bot failed over", bot_id=str(bot.id), from_gateway=from_gateway, to_gateway=target)
        return Move(bot.id, from_gateway, target, detail, result.command.event_id)
