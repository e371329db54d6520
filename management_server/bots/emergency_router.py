"""POST /api/v1/emergency-stop: halt given bots, your own, or (admins) the whole fleet."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select

from management_server.audit.models import Outcome
from management_server.auth.deps import Trader, client_ip, deny
from management_server.bots import emergency
from management_server.bots.models import ActualState, Bot
from management_server.bots.schemas import EmergencyIn, EmergencyOut, EmergencyOutcomeOut
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.users.models import Role
from shared.metrics import EMERGENCY_STOPS

router = APIRouter(prefix="/api/v1", tags=["bots"], responses=errors(401, 403, 404, 429))


@router.post("/emergency-stop", response_model=EmergencyOut)
async def emergency_stop(body: EmergencyIn, request: Request, session: SessionDep, principal: Trader) -> EmergencyOut:
    """Pause entries, close every open trade, stop and end the bots' processes, on all gateways at once.

    Halted bots stay halted until someone starts them again. The answer waits a few seconds for the
    gateways' reports; bots they have not reported on yet are `pending` (follow them on GET /bots/{id})."""
    started = time.monotonic()
    user = principal.user
    query = select(Bot).with_for_update()
    if body.scope == "all":
        if not principal.is_admin:  # the role and, for a personal access token, its admin scope
            detail = (
                "This personal access token lacks the 'admin' scope: halting the whole fleet needs it (use a token "
                "with it, or scope 'mine')."
                if principal.user.role is Role.admin
                else "Only an admin may halt the whole fleet: use scope 'mine'."
            )
            why = "a token without the admin scope" if principal.user.role is Role.admin else "a non-admin"
            raise await deny(request, 403, detail, f"emergency stop of all bots by {why}", principal.actor)
    elif body.scope == "mine":
        query = query.where(Bot.owner_id == user.id)
    else:
        assert body.bot_ids is not None
        query = query.where(Bot.id.in_(body.bot_ids))
        if not principal.is_admin:
            query = query.where(Bot.owner_id == user.id)
    bots = list((await session.execute(query)).scalars())
    if body.bot_ids is not None and (missing := set(body.bot_ids) - {b.id for b in bots}):
        raise HTTPException(404, f"No such bot: {sorted(str(m) for m in missing)[0]}.")
    actor = principal.actor
    halt = await emergency.halt(session, bots, actor.label, body.reason)
    await session.commit()
    request.app.state.outbox_relay.wake()
    EMERGENCY_STOPS.labels(via="api").inc()
    await request.app.state.audit.record(
        "bot.emergency_stop",
        Outcome.success,
        actor,
        target_type="fleet" if body.scope == "all" else "bots",
        target_id=body.scope or f"{len(bots)} bots",
        ip=client_ip(request),
        details={"bots": [str(b) for b in halt.bot_ids], "gateways": sorted(halt.sent_to), "reason": body.reason},
    )
    settings = request.app.state.settings
    rows = await emergency.wait_for_outcomes(
        request.app.state.sessionmaker, halt.bot_ids, settings.emergency_wait_seconds
    )
    results = []
    for bot_id in halt.bot_ids:
        bot = rows[bot_id]
        state = bot.actual_state
        outcome = (
            "halted"
            if state in (ActualState.halted, ActualState.stopped)
            else ("failed" if state == ActualState.failed else "pending")
        )
        results.append(EmergencyOutcomeOut(bot_id=bot_id, outcome=outcome, actual_state=state, detail=bot.last_error))
    return EmergencyOut(
        completed=all(r.outcome != "pending" for r in results),
        seconds=round(time.monotonic() - started, 3),
        command_ids=halt.command_ids,
        results=results,
    )
