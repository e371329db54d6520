"""Uploading, reviewing and finding strategies."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.strategies.models import CheckStatus, Strategy, StrategyStatus
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


class CheckInProgress(Exception):
    pass


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


async def visible(
    session: AsyncSession, viewer: Viewer, strategy_id: uuid.UUID, *, for_update: bool = False
) -> Strategy | None:
    """The strategy if this viewer may see it (their own, or any for an admin); ``for_update`` locks its row."""
    strategy = await session.get(Strategy, strategy_id, with_for_update=for_update)
    if strategy is None or not viewer.may_see(strategy.owner_id):
        return None
    return strategy


def review(strategy: Strategy, reviewer: User, status: StrategyStatus, note: str | None) -> None:
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
