"""/api/v1/strategies: upload (statically checked, then a backtest queued), list, read, delete, check again;
admins approve or reject."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from management_server.audit.models import Outcome
from management_server.audit.service import AuditLog
from management_server.auth.deps import AdminPrincipal, Reader, Trader, client_ip
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.strategies import service
from management_server.strategies.models import CheckStatus, Strategy, StrategyStatus
from management_server.strategies.schemas import (
    ProblemOut,
    ReviewIn,
    StrategyCreate,
    StrategyDetail,
    StrategyInvalid,
    StrategyOut,
)
from management_server.strategies.tasks import CheckQueue

router = APIRouter(prefix="/api/v1/strategies", tags=["strategies"], responses=errors(401, 403, 404, 409, 429))

NOT_FOUND = "No such strategy."
NOT_APPROVED = "An admin must approve the strategy before it is checked: the check runs its code."
CHECK_UNAVAILABLE = "The check could not be queued: the task broker did not answer. Try again in a moment."


def _check_queue(request: Request) -> CheckQueue | None:
    """Where checks are sent; None when this app has no Celery broker."""
    queue: CheckQueue | None = getattr(request.app.state, "check_queue", None)
    return queue


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
async def upload_strategy(body: StrategyCreate, request: Request, session: SessionDep, principal: Trader) -> Response:
    """Upload a strategy's source. It is checked without being run; an admin's is approved at once,
    anyone else's waits for an admin's review. An approved strategy then gets a short backtest on the
    exchange simulator (`check_status: queued`; `not_run` when the task broker did not take it); one under
    review is checked once approved, since the check runs its code."""
    audit: AuditLog = request.app.state.audit
    try:
        strategy = await service.upload(
            session, principal.viewer, body.name, body.source, request.app.state.settings.strategy_review
        )
    except service.StrategyInvalid as exc:
        await audit.record("strategy.upload", Outcome.failure, principal.actor, reason=str(exc), ip=client_ip(request))
        body_out = StrategyInvalid(
            detail=str(exc), errors=[ProblemOut(line=p.line, message=p.message) for p in exc.problems]
        )
        return JSONResponse(status_code=400, content=body_out.model_dump())
    except service.NameTaken as exc:
        raise HTTPException(409, str(exc)) from None
    # The check runs the strategy's code: only once it is approved (an admin's upload is).
    queue = _check_queue(request) if strategy.status == StrategyStatus.approved else None
    if queue is not None:
        strategy.check_status = CheckStatus.queued.value
    await session.commit()
    if queue is not None and await queue.send(strategy.id, strategy.sha256) is None:
        await service.unqueue_check(session, strategy, CheckStatus.not_run.value)  # the upload stands
    await audit.record(
        "strategy.upload",
        Outcome.success,
        principal.actor,
        target_type="strategy",
        target_id=strategy.id,
        ip=client_ip(request),
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
    query = select(Strategy).order_by(Strategy.created_at.desc(), Strategy.id)
    if not principal.is_admin:
        query = query.where(Strategy.owner_id == principal.user.id)
    if status_filter is not None:
        query = query.where(Strategy.status == status_filter.value)
    rows = await session.execute(query.limit(limit).offset(offset))
    return [_out(s) for s in rows.scalars()]


@router.get("/{strategy_id}", response_model=StrategyDetail)
async def get_strategy(strategy_id: uuid.UUID, session: SessionDep, principal: Reader) -> StrategyOut:
    strategy = await service.visible(session, principal.viewer, strategy_id)
    if strategy is None:
        raise HTTPException(404, NOT_FOUND)
    return _out(strategy, StrategyDetail)


@router.post(
    "/{strategy_id}/check",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StrategyOut,
    responses={503: {"description": "The task broker did not take the check"}},
)
async def check_strategy(strategy_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> Response:
    """Queue the deeper check: a short backtest on the exchange simulator, run by a worker. It runs the
    strategy's code, so its owner may ask for it once the strategy is approved; an admin may also check a
    strategy under review, to decide. The outcome lands in `check_status` (`passed`/`failed`) and
    `check_result`; the review status never changes with it. 409 while a check is queued or running."""
    audit: AuditLog = request.app.state.audit
    queue = _check_queue(request)
    if queue is None:
        raise HTTPException(503, "Strategy checks are not available: this server has no task broker.")
    strategy = await service.visible(session, principal.viewer, strategy_id, for_update=True)
    if strategy is None:
        raise HTTPException(404, NOT_FOUND)

    async def record(outcome: Outcome, reason: str | None = None, details: dict[str, Any] | None = None) -> None:
        await audit.record(
            "strategy.check",
            outcome,
            principal.actor,
            target_type="strategy",
            target_id=strategy_id,
            reason=reason,
            ip=client_ip(request),
            details=details,
        )

    if strategy.status != StrategyStatus.approved and not principal.is_admin:
        await session.rollback()
        await record(Outcome.failure, reason=NOT_APPROVED)
        raise HTTPException(409, NOT_APPROVED)
    try:
        previous = service.queue_check(strategy)
    except service.CheckInProgress as exc:
        await session.rollback()
        await record(Outcome.failure, reason=str(exc))
        raise HTTPException(409, str(exc)) from None
    await session.commit()
    task_id = await queue.send(strategy.id, strategy.sha256)
    if task_id is None:
        await service.unqueue_check(session, strategy, previous)
        await record(Outcome.failure, reason=CHECK_UNAVAILABLE)
        raise HTTPException(503, CHECK_UNAVAILABLE)
    await record(Outcome.success, details={"sha256": strategy.sha256, "task_id": task_id, "previous": previous})
    return JSONResponse(status_code=202, content=_out(strategy).model_dump(mode="json"))


@router.delete("/{strategy_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_strategy(strategy_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> Response:
    strategy = await service.visible(session, principal.viewer, strategy_id)
    if strategy is None:
        raise HTTPException(404, NOT_FOUND)
    await session.delete(strategy)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, "Bots still use this strategy: delete them first.") from None
    await request.app.state.audit.record(
        "strategy.delete",
        Outcome.success,
        principal.actor,
        target_type="strategy",
        target_id=strategy_id,
        ip=client_ip(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _review(
    strategy_id: uuid.UUID,
    decision: StrategyStatus,
    body: ReviewIn | None,
    request: Request,
    session: SessionDep,
    admin: AdminPrincipal,
) -> StrategyOut:
    strategy = await session.get(Strategy, strategy_id)
    if strategy is None:
        raise HTTPException(404, NOT_FOUND)
    service.review(strategy, admin.user, decision, body.note if body else None)
    queue = _check_queue(request) if decision is StrategyStatus.approved else None
    previous = None
    if queue is not None and strategy.check_status in (CheckStatus.not_run, CheckStatus.failed):
        previous = service.queue_check(strategy)  # approved now: its code may be run by a check
    await session.commit()
    if queue is not None and previous is not None and await queue.send(strategy.id, strategy.sha256) is None:
        await service.unqueue_check(session, strategy, previous)
    await request.app.state.audit.record(
        f"strategy.{'approve' if decision is StrategyStatus.approved else 'reject'}",
        Outcome.success,
        admin.actor,
        target_type="strategy",
        target_id=strategy.id,
        ip=client_ip(request),
    )
    return _out(strategy)


@router.post("/{strategy_id}/approve", response_model=StrategyOut)
async def approve_strategy(
    strategy_id: uuid.UUID, request: Request, session: SessionDep, admin: AdminPrincipal, body: ReviewIn | None = None
) -> StrategyOut:
    """Approve a strategy so bots can run it (admins)."""
    return await _review(strategy_id, StrategyStatus.approved, body, request, session, admin)


@router.post("/{strategy_id}/reject", response_model=StrategyOut)
async def reject_strategy(
    strategy_id: uuid.UUID, request: Request, session: SessionDep, admin: AdminPrincipal, body: ReviewIn | None = None
) -> StrategyOut:
    """Reject a strategy, with a note its owner will see (admins)."""
    return await _review(strategy_id, StrategyStatus.rejected, body, request, session, admin)
