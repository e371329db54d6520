"""/api/v1/strategies: upload (statically checked, then a backtest queued), list, read, delete, check again;
admins approve or reject."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.auth.deps import AdminPrincipal, Audit, Reader, Trader
from management_server.db import SessionDep
from management_server.deps import CheckQueueDep, SettingsDep, built, found
from management_server.errors import errors
from management_server.strategies import service
from management_server.strategies.deps import (
    NOT_FOUND,
    CheckBroker,
    LockedStrategy,
    VisibleStrategy,
    WritableStrategy,
)
from management_server.strategies.models import Strategy, StrategyStatus
from management_server.strategies.schemas import (
    ProblemOut,
    ReviewIn,
    StrategyCreate,
    StrategyDetail,
    StrategyInvalid,
    StrategyOut,
)

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"], responses=errors(401, 403, 404, 409, 429))


def _out(strategy: Strategy, model: type[StrategyOut] = StrategyOut) -> StrategyOut:
    out = model.model_validate(strategy)
    if strategy.status == StrategyStatus.rejected and strategy.review_note:
        out.errors = [ProblemOut(line=0, message=strategy.review_note)]
    return out


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StrategyOut,
    responses={400: {"model": StrategyInvalid, "description": "The source failed the static checks"}},
)
async def upload_strategy(
    body: StrategyCreate,
    session: SessionDep,
    principal: Trader,
    settings: SettingsDep,
    queue: CheckQueueDep,
    audit: Audit,
) -> Response:
    """Upload a strategy's source. It is checked without being run; an admin's is approved at once,
    anyone else's waits for an admin's review. An approved strategy then gets a short backtest on the
    exchange simulator (`check_status: queued`; `not_run` when the task broker did not take it); one under
    review is checked once approved, since the check runs its code."""
    try:
        strategy = await service.upload(session, principal.viewer, body.name, body.source, settings.strategy_review)
    except service.StrategyInvalid as exc:
        await audit.record("strategy.upload", Outcome.failure, reason=str(exc))
        body_out = StrategyInvalid(
            detail=str(exc), errors=[ProblemOut(line=p.line, message=p.message) for p in exc.problems]
        )
        return JSONResponse(status_code=400, content=body_out.model_dump())
    except service.NameTaken as exc:
        raise HTTPException(409, str(exc)) from None
    await service.queue_first_check(session, strategy, queue)
    await audit.record(
        "strategy.upload",
        Outcome.success,
        target_type="strategy",
        target_id=strategy.id,
        details={
            "name": strategy.name,
            "class_name": strategy.class_name,
            "status": strategy.status,
            "check_status": strategy.check_status,
        },
    )
    return JSONResponse(status_code=201, content=_out(strategy).model_dump(mode="json"))


@router.get("", response_model=list[StrategyOut])
async def list_strategies(
    session: SessionDep,
    principal: Reader,
    status_filter: Annotated[StrategyStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[StrategyOut]:
    """Your strategies (an admin sees everyone's), newest first."""
    return [_out(s) for s in await service.list_visible(session, principal.viewer, status_filter, limit, offset)]


@router.get("/{strategy_id}", response_model=StrategyDetail)
async def get_strategy(strategy: VisibleStrategy) -> StrategyOut:
    return _out(strategy, StrategyDetail)


@router.post(
    "/{strategy_id}/check",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StrategyOut,
    responses={503: {"description": "The task broker did not take the check"}},
)
async def check_strategy(
    session: SessionDep, principal: Trader, queue: CheckBroker, strategy: LockedStrategy, audit: Audit
) -> Response:
    """Queue the deeper check: a short backtest on the exchange simulator, run by a worker. It runs the
    strategy's code, so its owner may ask for it once the strategy is approved; an admin may also check a
    strategy under review, to decide. The outcome lands in `check_status` (`passed`/`failed`) and
    `check_result`; the review status never changes with it. 409 while a check is queued or running."""
    refused = (service.CheckRefused,)
    async with audit.refusals(session, "strategy.check", refused, target_type="strategy", target_id=strategy.id):
        task_id, previous = await service.check(session, strategy, principal.viewer, queue)
    await audit.record(
        "strategy.check",
        Outcome.success,
        target_type="strategy",
        target_id=strategy.id,
        details={"sha256": strategy.sha256, "task_id": task_id, "previous": previous},
    )
    return JSONResponse(status_code=202, content=_out(strategy).model_dump(mode="json"))


@router.delete("/{strategy_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_strategy(strategy: WritableStrategy, session: SessionDep, audit: Audit) -> Response:
    strategy_id = strategy.id
    await session.delete(strategy)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, "Bots still use this strategy: delete them first.") from None
    await audit.record("strategy.delete", Outcome.success, target_type="strategy", target_id=strategy_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@dataclass(frozen=True)
class StrategyReview:
    """An admin's decision on a strategy (any strategy: admins see all)."""

    session: SessionDep
    admin: AdminPrincipal
    queue: CheckQueueDep
    audit: Audit

    async def __call__(self, strategy_id: uuid.UUID, decision: StrategyStatus, body: ReviewIn | None) -> StrategyOut:
        strategy = found(await self.session.get(Strategy, strategy_id), NOT_FOUND)
        note = body.note if body else None
        await service.decide(self.session, strategy, self.admin.user, decision, note, self.queue)
        action = f"strategy.{'approve' if decision is StrategyStatus.approved else 'reject'}"
        await self.audit.record(action, Outcome.success, target_type="strategy", target_id=strategy.id)
        return _out(strategy)


Review = Annotated[StrategyReview, Depends(built(StrategyReview))]


@router.post("/{strategy_id}/approve", response_model=StrategyOut)
async def approve_strategy(strategy_id: uuid.UUID, review: Review, body: ReviewIn | None = None) -> StrategyOut:
    """Approve a strategy so bots can run it (admins)."""
    return await review(strategy_id, StrategyStatus.approved, body)


@router.post("/{strategy_id}/reject", response_model=StrategyOut)
async def reject_strategy(strategy_id: uuid.UUID, review: Review, body: ReviewIn | None = None) -> StrategyOut:
    """Reject a strategy, with a note its owner will see (admins)."""
    return await review(strategy_id, StrategyStatus.rejected, body)
