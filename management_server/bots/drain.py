"""Draining a gateway (``POST /api/v1/gateways/{id}/drain``): its bots moved to other gateways one at a time.

A drained gateway takes no new bot (``gateways.service.live_gateways`` leaves it out of placement). Every
``failover_interval`` seconds (one replica at a time: an advisory lock), for each gateway being drained, one bot is
on its way at most (stopped there, not yet started elsewhere):

1. the next bot placed there that should run (``running`` or ``paused``) gets a STOP_BOT (it keeps its open trades
   in its database) and ``moving_from`` set to the gateway; its desired state is kept aside as ``stopped`` for now;
2. once the old gateway reports no process of it (``actual_state`` ``stopped``, or ``failed``), its database role
   gets a new password and any session left is ended (as in a failover), and it gets a START_BOT on the least loaded
   other live gateway with room, at the next generation (a paused bot is paused again at once); ``moving_from`` is
   cleared, and in the same round the next bot is stopped.

So a bot never runs in two places: the new gateway is only asked once the old one has said the process ended. Each
step is audited (``bot.drain_stop``, ``bot.drain_start``, actor ``freqfleet:drain``). A SQLite bot can't take its
trades along: it is left where it is, with the reason in ``last_error``; a bot pinned to the gateway (``placement``)
stays too. When no bot that should run is left on the gateway (but those), the drain is done; the gateway stays
drained until ``DELETE .../drain``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import Outcome
from management_server.audit.service import Actor
from management_server.botdb.service import BotDatabaseRefused
from management_server.bots.lifecycle import Action, ActionRefused, act
from management_server.bots.models import ActualState, Bot, DesiredState
from management_server.bots.moves import Mover
from management_server.freqai.service import ModelRefused
from management_server.gateways.models import Gateway
from management_server.gateways.service import live_gateways
from shared.logging import get_logger

log = get_logger(__name__)

ACTOR = Actor(None, "freqfleet:drain")
LOCK_KEY = 0x46726571_4472616E  # "FreqDran"
RUNS = (DesiredState.running.value, DesiredState.paused.value)
ENDED = (ActualState.stopped.value, ActualState.failed.value, ActualState.halted.value)  # no process left there


@dataclass(frozen=True)
class Step:
    bot_id: str
    gateway_id: str
    action: str  # "stop", "start", "left" (can't move)
    detail: str


class Drainer(Mover):
    name = "drain"

    async def tick(self) -> None:
        await self.pass_once()

    async def pass_once(self) -> list[Step]:
        steps: list[Step] = []
        async with self.sessionmaker.begin() as session:
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
                return []
            draining = await session.execute(
                select(Gateway.gateway_id).where(Gateway.drain_requested_at.is_not(None), Gateway.revoked_at.is_(None))
            )
            for gateway_id in draining.scalars():
                for step in await self._gateway(session, gateway_id):
                    steps.append(step)
                    self.audit.add(
                        session,
                        f"bot.drain_{step.action}",
                        Outcome.requested if step.action != "left" else Outcome.failure,
                        ACTOR,
                        target_type="bot",
                        target_id=step.bot_id,
                        reason=step.detail,
                        via="drain",
                        details={"from_gateway": gateway_id},
                    )
        if self.on_commands is not None and any(s.action in ("stop", "start") for s in steps):
            self.on_commands()
        return steps

    async def _gateway(self, session: AsyncSession, gateway_id: str) -> list[Step]:
        """This round's steps: the bot on its way started elsewhere once it has stopped, then (none on its way any
        more) the next one stopped."""
        steps: list[Step] = []
        moving = (
            await session.execute(select(Bot).where(Bot.moving_from == gateway_id).with_for_update().limit(1))
        ).scalar_one_or_none()
        if moving is not None:
            started = await self._start_elsewhere(session, moving, gateway_id)
            if started is None or moving.moving_from is not None:
                return [] if started is None else [started]
            steps.append(started)
        following = await self._stop_next(session, gateway_id)
        return steps + ([] if following is None else [following])

    async def _stop_next(self, session: AsyncSession, gateway_id: str) -> Step | None:
        candidates = await session.execute(
            select(Bot)
            .where(
                Bot.gateway_id == gateway_id,
                Bot.desired_state.in_(RUNS),
                Bot.trade_db == "postgres",
                Bot.pinned_gateway_id.is_distinct_from(gateway_id),  # pinned there: it stays
            )
            .order_by(Bot.created_at, Bot.id)
            .with_for_update()
            .limit(1)
        )
        bot = candidates.scalar_one_or_none()
        if bot is None:
            return await self._left_behind(session, gateway_id)
        paused = bot.desired_state == DesiredState.paused.value
        try:
            await act(session, bot, Action.stop, self.keys)
        except ActionRefused as exc:
            return Step(str(bot.id), gateway_id, "left", str(exc))
        bot.moving_from, bot.moving_paused = gateway_id, paused
        return Step(str(bot.id), gateway_id, "stop", f"stopping it on {gateway_id} to move it off (a drain)")

    async def _start_elsewhere(self, session: AsyncSession, bot: Bot, gateway_id: str) -> Step | None:
        if bot.gateway_id != gateway_id or bot.desired_state != DesiredState.stopped.value:
            bot.moving_from = None  # someone started or moved it meanwhile: theirs to say where it runs
            return None
        if bot.actual_state not in ENDED:
            return None  # its old gateway has not said the process ended: nothing runs twice
        live = [g for g in await live_gateways(session) if g.gateway_id != gateway_id and g.capacity > 0]
        if bot.pinned_gateway_id is not None:  # pinned elsewhere (re-pinned while it ran here): there only
            live = [g for g in live if g.gateway_id == bot.pinned_gateway_id]
        if not live:
            return None  # waits for a gateway with room
        target = live[0].gateway_id
        try:
            await self.start_elsewhere(session, bot, target, paused=bot.moving_paused)
        except (BotDatabaseRefused, ActionRefused, ModelRefused) as exc:
            log.warning("drain: the bot could not start elsewhere", bot_id=str(bot.id), error=str(exc))
            return None
        bot.moving_from, bot.moving_paused = None, False
        return Step(str(bot.id), gateway_id, "start", f"moved off {gateway_id} (a drain): started on {target}")

    async def _left_behind(self, session: AsyncSession, gateway_id: str) -> Step | None:
        """The SQLite bots that should run there: they stay (said once each)."""
        rows = await session.execute(
            select(Bot)
            .where(Bot.gateway_id == gateway_id, Bot.desired_state.in_(RUNS), Bot.trade_db != "postgres")
            .with_for_update()
        )
        why = (
            f"its gateway {gateway_id} is being drained, and its trades are in SQLite there: it can't move with them "
            "(freqfleet bots migrate-db, then it moves)"
        )
        for bot in rows.scalars():
            if bot.last_error != why:
                bot.last_error = why
                return Step(str(bot.id), gateway_id, "left", why)
        return None
