"""Uploading, reviewing and finding strategies."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.strategies.models import Strategy, StrategyStatus
from management_server.strategies.validation import Problem, validate_strategy
from management_server.users.models import Role, User


class StrategyInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(f"The strategy is refused: line {first.line}: {first.message}.")
        self.problems = problems


class NameTaken(Exception):
    pass


async def upload(session: AsyncSession, owner: User, name: str, source: str, review: bool) -> Strategy:
    """Store a strategy that passed the static checks; a non-admin's waits for review."""
    result = validate_strategy(source)
    if not result.ok or result.class_name is None:
        raise StrategyInvalid(result.problems)
    taken = await session.execute(select(Strategy.id).where(Strategy.owner_id == owner.id, Strategy.name == name))
    if taken.first() is not None:
        raise NameTaken(f"You have a strategy named {name!r} already: choose another name or delete it first.")
    approved = owner.role is Role.admin or not review
    strategy = Strategy(
        owner_id=owner.id,
        name=name,
        class_name=result.class_name,
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        status=(StrategyStatus.approved if approved else StrategyStatus.pending_review).value,
        reviewed_by=owner.id if owner.role is Role.admin else None,
        reviewed_at=datetime.now(UTC) if owner.role is Role.admin else None,
    )
    session.add(strategy)
    await session.flush()
    return strategy


async def visible(session: AsyncSession, user: User, strategy_id: uuid.UUID) -> Strategy | None:
    """The strategy if this user may see it (their own, or any for an admin)."""
    strategy = await session.get(Strategy, strategy_id)
    if strategy is None or (user.role is not Role.admin and strategy.owner_id != user.id):
        return None
    return strategy


def review(strategy: Strategy, reviewer: User, status: StrategyStatus, note: str | None) -> None:
    strategy.status = status.value
    strategy.review_note = note
    strategy.reviewed_by = reviewer.id
    strategy.reviewed_at = datetime.now(UTC)
