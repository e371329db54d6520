"""Writing and reading the audit log.

Entries are written in a transaction of their own, so a refused or failed action is
recorded even though the request's own transaction rolls back. ``details`` pass through
the same redaction as logs: no password, token or secret ever lands here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgi_correlation_id import correlation_id
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.audit.models import AuditEntry, Outcome
from management_server.db import utcnow
from shared.logging import get_logger, redact

log = get_logger(__name__)


@dataclass(frozen=True)
class Actor:
    id: uuid.UUID | None
    label: str  # email or "anonymous"

    @classmethod
    def anonymous(cls) -> Actor:
        return cls(None, "anonymous")


class AuditLog:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def record(
        self,
        action: str,
        outcome: Outcome,
        actor: Actor,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        reason: str | None = None,
        ip: str | None = None,
        via: str = "rest",
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> None:
        """Write the row in a transaction of its own (a refusal is recorded though the request rolls back)."""
        async with self.sessionmaker.begin() as session:
            self.add(
                session,
                action,
                outcome,
                actor,
                target_type=target_type,
                target_id=target_id,
                reason=reason,
                ip=ip,
                via=via,
                details=details,
                command_id=command_id,
            )

    def add(
        self,
        session: AsyncSession,
        action: str,
        outcome: Outcome,
        actor: Actor,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        reason: str | None = None,
        ip: str | None = None,
        via: str = "rest",
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> AuditEntry:
        """Add the row to the caller's transaction: a command's ``requested`` row commits with its outbox entry,
        so the gateway's answer (``audit.events.record_command_outcome``) always finds it."""
        entry = AuditEntry(
            **self.row(
                action,
                outcome,
                actor,
                target_type=target_type,
                target_id=target_id,
                reason=reason,
                ip=ip,
                via=via,
                details=details,
                command_id=command_id,
            )
        )
        session.add(entry)
        return entry

    @staticmethod
    def row(
        action: str,
        outcome: Outcome,
        actor: Actor,
        *,
        target_type: str | None = None,
        target_id: str | uuid.UUID | None = None,
        reason: str | None = None,
        ip: str | None = None,
        via: str = "rest",
        details: dict[str, Any] | None = None,
        command_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """The entry's column values (bounded, redacted), for a caller that writes it itself (``add``, or a
        statement of its own: ``bots.lifecycle.act``); the entry is logged as it is made."""
        target = None if target_id is None else str(target_id)[:64]
        log.info(
            "audit", action=action, outcome=outcome.value, actor=actor.label, target_type=target_type, target_id=target
        )
        return {
            "occurred_at": utcnow(),  # every value given: a statement's CTE gets no column defaults
            "actor_id": actor.id,
            "actor": actor.label[:320],
            "via": via,
            "action": action,
            "target_type": target_type,
            "target_id": target,
            "outcome": outcome.value,
            "reason": None if reason is None else reason[:2000],
            "ip": ip,
            "correlation_id": correlation_id.get(),
            "details": redact(details) if details else None,
            "command_id": command_id,
        }


@dataclass(frozen=True)
class AuditQuery:
    actor_id: uuid.UUID | None = None
    action: str | None = None
    outcome: Outcome | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # keyset pagination: entries older than this id
    limit: int = 100

    def statement(self) -> Select[AuditEntry]:
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(self.limit)
        if self.actor_id is not None:
            stmt = stmt.where(AuditEntry.actor_id == self.actor_id)
        if self.action is not None:
            stmt = stmt.where(AuditEntry.action == self.action)
        if self.outcome is not None:
            stmt = stmt.where(AuditEntry.outcome == self.outcome.value)
        if self.target_type is not None:
            stmt = stmt.where(AuditEntry.target_type == self.target_type)
        if self.target_id is not None:
            stmt = stmt.where(AuditEntry.target_id == self.target_id)
        if self.since is not None:
            stmt = stmt.where(AuditEntry.occurred_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(AuditEntry.occurred_at < self.until)
        if self.before_id is not None:
            stmt = stmt.where(AuditEntry.id < self.before_id)
        return stmt


async def search(session: AsyncSession, query: AuditQuery) -> list[AuditEntry]:
    return list((await session.execute(query.statement())).scalars())
