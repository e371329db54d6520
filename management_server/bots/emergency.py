"""Emergency stop from the management API: halt the chosen bots on every gateway at once.

Each bot's desired state becomes ``halted`` (only a new start leaves it) and its generation
moves on; one EMERGENCY_STOP per gateway goes through the outbox in the same transaction.
Gateways run stopentry, forceexit all, stop and terminate on their bots in parallel and
report each bot's outcome; the request waits a bounded time for those reports and answers
what it knows, marking the rest ``pending``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.bots.models import ActualState, Bot, DesiredState
from management_server.bots.schemas import EmergencyOutcomeOut
from management_server.bus.service import enqueue
from management_server.errors import Refused
from management_server.users.viewer import Viewer
from shared.bus.messages import BotRef, EmergencyScope, EmergencyStop, EmergencyStopData
from shared.bus.streams import commands_stream

ACTIVE = (ActualState.running, ActualState.paused, ActualState.starting, ActualState.stopping)


@dataclass(frozen=True)
class Halt:
    bot_ids: list[uuid.UUID]
    sent_to: dict[str, list[uuid.UUID]]  # gateway -> bots
    already_stopped: list[uuid.UUID]
    command_ids: list[uuid.UUID]


async def targets(
    session: AsyncSession, viewer: Viewer, scope: str | None, bot_ids: list[uuid.UUID] | None
) -> list[Bot]:
    """The bots to halt, their rows locked: every bot (``all``: the caller has checked the viewer is an admin), the
    viewer's own (``mine``), or ``bot_ids``, each one the viewer may see (else :class:`Refused`, 404)."""
    query = select(Bot).with_for_update()
    if scope == "mine":
        query = query.where(Bot.owner_id == viewer.user.id)
    elif scope != "all":
        assert bot_ids is not None
        query = query.where(Bot.id.in_(bot_ids))
        if not viewer.admin:
            query = query.where(Bot.owner_id == viewer.user.id)
    bots = list((await session.execute(query)).scalars())
    if bot_ids is not None and (missing := set(bot_ids) - {b.id for b in bots}):
        raise Refused(404, f"No such bot: {sorted(str(m) for m in missing)[0]}.")
    return bots


async def halt(session: AsyncSession, bots: list[Bot], requested_by: str, reason: str | None) -> Halt:
    by_gateway: dict[str, list[Bot]] = defaultdict(list)
    idle: list[uuid.UUID] = []
    now = datetime.now(UTC)
    for bot in bots:
        bot.desired_state = DesiredState.halted.value
        bot.generation += 1
        bot.updated_at = bot.commanded_at = now
        if bot.gateway_id is not None and bot.actual_state in ACTIVE:
            by_gateway[bot.gateway_id].append(bot)
        else:
            bot.actual_state = ActualState.halted.value
            idle.append(bot.id)
    command_ids = []
    for gateway_id, group in by_gateway.items():
        command = EmergencyStop(
            source="management",
            data=EmergencyStopData(
                scope=EmergencyScope.bots,
                bots=[BotRef(bot_id=b.id, generation=b.generation) for b in group],
                requested_by=requested_by,
                reason=reason,
            ),
        )
        await enqueue(session, commands_stream(gateway_id), command)
        command_ids.append(command.event_id)
    return Halt(
        bot_ids=[b.id for b in bots],
        sent_to={g: [b.id for b in group] for g, group in by_gateway.items()},
        already_stopped=idle,
        command_ids=command_ids,
    )


async def wait_for_outcomes(
    sessionmaker: async_sessionmaker[AsyncSession], bot_ids: list[uuid.UUID], timeout: float
) -> dict[uuid.UUID, Bot]:
    """The bots once every one has stopped being active, or as they are when ``timeout`` ends."""
    deadline = time.monotonic() + timeout
    while True:
        async with sessionmaker() as session:
            rows = {b.id: b for b in (await session.execute(select(Bot).where(Bot.id.in_(bot_ids)))).scalars()}
        if all(b.actual_state not in ACTIVE for b in rows.values()) or time.monotonic() >= deadline:
            return rows
        await asyncio.sleep(0.1)


def outcomes(bot_ids: list[uuid.UUID], rows: dict[uuid.UUID, Bot]) -> list[EmergencyOutcomeOut]:
    """Each bot's outcome as far as its gateway reported it: halted (or stopped), failed, or still pending."""
    results = []
    for bot_id in bot_ids:
        bot = rows[bot_id]
        state = bot.actual_state
        outcome = (
            "halted"
            if state in (ActualState.halted, ActualState.stopped)
            else ("failed" if state == ActualState.failed else "pending")
        )
        results.append(EmergencyOutcomeOut(bot_id=bot_id, outcome=outcome, actual_state=state, detail=bot.last_error))
    return results
