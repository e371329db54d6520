"""POST /api/v1/emergency-stop: halt given bots, your own, or (admins) the whole fleet."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException

from management_server.audit.models import Outcome
from management_server.auth.deps import Audit, Trader
from management_server.bots import emergency
from management_server.bots.schemas import EmergencyIn, EmergencyOut
from management_server.db import SessionDep
from management_server.deps import RelayDep, SessionmakerDep, SettingsDep
from management_server.errors import Refused, errors
from management_server.users.models import Role
from shared.metrics import EMERGENCY_STOPS

router = APIRouter(prefix="/api/v1", tags=["bots"], responses=errors(401, 403, 404, 429))


@router.post("/emergency-stop", response_model=EmergencyOut)
async def emergency_stop(
    body: EmergencyIn,
    session: SessionDep,
    principal: Trader,
    settings: SettingsDep,
    sessionmaker: SessionmakerDep,
    relay: RelayDep,
    audit: Audit,
) -> EmergencyOut:
    """Pause entries, close every open trade, stop and end the bots' processes, on all gateways at once.

    Halted bots stay halted until someone starts them again. The answer waits a few seconds for the
    gateways' reports; bots they have not reported on yet are `pending` (follow them on GET /bots/{id})."""
    started = time.monotonic()
    if body.scope == "all" and not principal.is_admin:  # the role and, for a personal access token, its admin scope
        admin = principal.user.role is Role.admin
        detail = (
            "This personal access token lacks the 'admin' scope: halting the whole fleet needs it (use a token "
            "with it, or scope 'mine')."
            if admin
            else "Only an admin may halt the whole fleet: use scope 'mine'."
        )
        why = "a token without the admin scope" if admin else "a non-admin"
        raise await audit.deny(403, detail, f"emergency stop of all bots by {why}")
    try:
        bots = await emergency.targets(session, principal.viewer, body.scope, body.bot_ids)
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    halt = await emergency.halt(session, bots, principal.actor.label, body.reason)
    await session.commit()
    relay.wake()
    EMERGENCY_STOPS.labels(via="api").inc()
    await audit.record(
        "bot.emergency_stop",
        Outcome.success,
        target_type="fleet" if body.scope == "all" else "bots",
        target_id=body.scope or f"{len(bots)} bots",
        details={"bots": [str(b) for b in halt.bot_ids], "gateways": sorted(halt.sent_to), "reason": body.reason},
    )
    rows = await emergency.wait_for_outcomes(sessionmaker, halt.bot_ids, settings.emergency_wait_seconds)
    results = emergency.outcomes(halt.bot_ids, rows)
    return EmergencyOut(
        completed=all(r.outcome != "pending" for r in results),
        seconds=round(time.monotonic() - started, 3),
        command_ids=halt.command_ids,
        results=results,
    )
