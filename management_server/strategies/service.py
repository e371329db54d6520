"""Uploading, reviewing and finding strategies."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.auth.principals import UserFacts
from management_server.errors import Refused
from management_server.strategies.models import CheckStatus, Strategy, StrategyStatus
from management_server.strategies.tasks import CheckQueue
from management_server.strategies.validation import Problem, Validation, validate_strategy
from management_server.users.models import User
from management_server.users.viewer import Viewer


class StrategyInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(f"The strategy is refused: line {first.line}: {first.message}.")
        self.problems = problems


class NameTaken(Exception):
    pass


class CheckRefused(Refused):
    """A check of the strategy can't be queued now."""


class CheckInProgress(CheckRefused):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


NOT_APPROVED = "An admin must approve the strategy before it is checked: the check runs its code."
CHECK_UNAVAILABLE = "The check could not be queued: the task broker did not answer. Try again in a moment."


# A check queued or running for longer than this was lost (no worker, or one killed past its retries): a new
# one may be queued. A check takes seconds to minutes; a worker that dies mid-check hands it to another.
CHECK_STALE_AFTER = timedelta(hours=1)


_LINT_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="strategy-lint")
LINT_SECONDS = 5.0


async def lint(source: str) -> Validation:
    """:func:`validate_strategy` in a worker thread, given at most ``LINT_SECONDS``: the event loop keeps serving."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(_LINT_POOL, validate_strategy, source), LINT_SECONDS)
    except TimeoutError:
        return Validation(None, [Problem(1, f"the source took longer than {LINT_SECONDS:g} s to check: simplify it")])


async def upload(session: AsyncSession, viewer: Viewer, name: str, source: str, review: bool) -> Strategy:
    """Store a strategy that passed the static checks; a non-admin's (or an admin's without the admin scope)
    waits for review."""
    owner = viewer.user
    result = await lint(source)
    if not result.ok or result.class_name is None:
        raise StrategyInvalid(result.problems)
    taken = await session.execute(select(Strategy.id).where(Strategy.owner_id == owner.id, Strategy.name == name))
    if taken.first() is not None:
        raise NameTaken(f"You have a strategy named {name!r} already: choose another name or delete it first.")
    approved = viewer.admin or not review
    strategy = Strategy(
        owner_id=owner.id,
        name=name,
        class_name=result.class_name,
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        status=(StrategyStatus.approved if approved else StrategyStatus.pending_review).value,
        reviewed_by=owner.id if viewer.admin else None,
        reviewed_at=datetime.now(UTC) if viewer.admin else None,
    )
    session.add(strategy)
    await session.flush()
    return strategy


async def list_visible(
    session: AsyncSession, viewer: Viewer, status: StrategyStatus | None, limit: int, offset: int
) -> list[Strategy]:
    """The viewer's strategies (an admin: everyone's), of this review status (None: any), newest first."""
    query = select(Strategy).order_by(Strategy.created_at.desc(), Strategy.id)
    if not viewer.admin:
        query = query.where(Strategy.owner_id == viewer.user.id)
    if status is not None:
        query = query.where(Strategy.status == status.value)
    rows = await session.execute(query.limit(limit).offset(offset))
    return list(rows.scalars())


async def visible(
    session: AsyncSession, viewer: Viewer, strategy_id: uuid.UUID, *, for_update: bool = False
) -> Strategy | None:
    """The strategy if this viewer may see it (their own, or any for an admin); ``for_update`` locks its row."""
    strategy = await session.get(Strategy, strategy_id, with_for_update=for_update)
    if strategy is None or not viewer.may_see(strategy.owner_id):
        return None
    return strategy


def review(strategy: Strategy, reviewer: User | UserFacts, status: StrategyStatus, note: str | None) -> None:
    strategy.status = status.value
    strategy.review_note = note
    strategy.reviewed_by = reviewer.id
    strategy.reviewed_at = datetime.now(UTC)


def queue_check(strategy: Strategy, now: datetime | None = None) -> str:
    """Mark the strategy's deeper check queued (hold its row lock); the check status it had before.

    :raises CheckInProgress: a check is queued or running already (and not lost: see ``CHECK_STALE_AFTER``).
    """
    now = now or datetime.now(UTC)
    busy = strategy.check_status in (CheckStatus.queued, CheckStatus.running)
    if busy and now - strategy.updated_at < CHECK_STALE_AFTER:
        raise CheckInProgress(f"A check of this strategy is {strategy.check_status} already: wait for its result.")
    previous = strategy.check_status
    strategy.check_status = CheckStatus.queued.value
    return previous


async def unqueue_check(session: AsyncSession, strategy: Strategy, previous: str) -> None:
    """Put the check status back when its task could not be sent (unless a worker took it after all), and commit."""
    await session.execute(
        update(Strategy)
        .where(Strategy.id == strategy.id, Strategy.check_status == CheckStatus.queued.value)
        .values(check_status=previous)
    )
    await session.commit()
    await session.refresh(strategy)


async def send_check(session: AsyncSession, strategy: Strategy, queue: CheckQueue, previous: str) -> str | None:
    """Commit the check marked queued, then send its task; the task's id, or None when the broker did not take it
    (the check status is then back to ``previous``, committed too)."""
    await session.commit()
    task_id = await queue.send(strategy.id, strategy.sha256)
    if task_id is None:
        await unqueue_check(session, strategy, previous)
    return task_id


async def queue_first_check(session: AsyncSession, strategy: Strategy, queue: CheckQueue | None) -> None:
    """Commit a new upload, with its check queued when it is approved already (an admin's is): the check runs
    its code, so only then (``not_run`` when the broker does not take it; the upload stands)."""
    if queue is None or strategy.status != StrategyStatus.approved:
        await session.commit()
        return
    strategy.check_status = CheckStatus.queued.value
    await send_check(session, strategy, queue, CheckStatus.not_run.value)


async def decide(
    session: AsyncSession,
    strategy: Strategy,
    reviewer: User | UserFacts,
    decision: StrategyStatus,
    note: str | None,
    queue: CheckQueue | None,
) -> None:
    """Approve or reject the strategy, and commit; once approved, its code may be run by a check: one is queued
    unless it has passed already (or is under way)."""
    review(strategy, reviewer, decision, note)
    approved = decision is StrategyStatus.approved
    if queue is not None and approved and strategy.check_status in (CheckStatus.not_run, CheckStatus.failed):
        await send_check(session, strategy, queue, queue_check(strategy))
    else:
        await session.commit()


async def check(session: AsyncSession, strategy: Strategy, viewer: Viewer, queue: CheckQueue) -> tuple[str, str]:
    """Queue the deeper check of the strategy (its row locked) and send its task: the task's id and the check
    status it had before. :class:`CheckRefused` when it may not be run yet, is under way, or the broker did not
    take it."""
    if strategy.status != StrategyStatus.approved and not viewer.admin:
        raise CheckRefused(409, NOT_APPROVED)
    previous = queue_check(strategy)
    task_id = await send_check(session, strategy, queue, previous)
    if task_id is None:
        raise CheckRefused(503, CHECK_UNAVAILABLE)
    return task_id, previous
