"""Audit rows that arrive on the bus: the gateways' MCP tool calls (``MCP_CALL``), what a gateway did with a
command an audited control action sent (``COMMAND_ACCEPTED`` / ``COMMAND_REJECTED``: ``record_command_outcome``),
and whether the bot then got there (``record_command_done``).

A gateway serves MCP to AI agents and publishes one ``MCP_CALL`` per tool call or resource read
(who, which tool, the arguments with secrets masked, the outcome). The gateway has no database and
no credentials of its own to write here, and the bus is the one channel between the services that
only they can write to; it is also durable (the gateway's outbox keeps the event while Redis is
away, the consumer retries while PostgreSQL is). The row is written with ``via = "mcp"``, the time
of the call and the call's correlation id, which the management server's own rows for the REST
calls the tool made on the caller's behalf carry too.

The audit log is append-only, so a redelivered event can't be made harmless by an upsert: the
event is claimed in the inbox (``claim_event``) in the transaction that inserts the row.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import AuditEntry, Outcome
from management_server.bus.service import claim_event
from management_server.users.models import User
from shared.bus.messages import CommandAccepted, CommandRejected, Envelope, McpCall, TradeClosed
from shared.bus.streams import MANAGEMENT_GROUP
from shared.logging import redact


def mcp_action(message: McpCall) -> str:
    """``mcp.<tool>`` for a tool call, ``mcp.read_resource`` for a resource read."""
    data = message.data
    return "mcp.read_resource" if data.kind == "resource" else f"mcp.{data.name}"[:64]


async def record_mcp_call(session: AsyncSession, message: McpCall) -> bool:
    """Add the call's audit row in the caller's transaction; False when it was recorded before."""
    if not await claim_event(session, MANAGEMENT_GROUP, message):
        return False
    data = message.data
    user = await session.get(User, data.actor_id)
    details = {
        "tool" if data.kind == "tool" else "uri": data.name,
        "arguments": data.arguments,
        "gateway_id": data.gateway_id,
        "transport": data.transport,
        "role": data.role,
        # Named so that the log redaction (which masks keys naming a token) keeps them: they are no secret.
        "auth_type": data.token_type,
        "auth_id": str(data.token_id),
        "duration_ms": data.duration_ms,
    }
    if data.repeated:
        details["repeated"] = data.repeated  # more refusals like this one, sampled by the gateway
    session.add(
        AuditEntry(
            occurred_at=message.occurred_at,
            actor_id=data.actor_id,
            actor=(user.email if user is not None else f"unknown user {data.actor_id}")[:320],
            via="mcp",
            action=mcp_action(message),
            target_type=data.target_type,
            target_id=data.target_id,
            outcome=data.outcome,
            reason=data.reason,
            ip=data.client_ip,
            correlation_id=message.correlation_id,
            details=redact(details),
        )
    )
    return True


async def record_command_outcome(session: AsyncSession, message: CommandAccepted | CommandRejected) -> bool:
    """What the gateway did with a command a control action sent (``accepted``, or ``refused`` and why), as a row
    of its own beside the action's ``requested`` one; False for a command no audited action sent, or seen before."""
    data = message.data
    asked = (
        await session.execute(
            select(AuditEntry)
            .where(AuditEntry.command_id == data.command_id, AuditEntry.outcome == Outcome.requested.value)
            .limit(1)
        )
    ).scalar_one_or_none()
    if asked is None or not await claim_event(session, MANAGEMENT_GROUP, message):
        return False
    refused = isinstance(message, CommandRejected)
    outcome = Outcome.refused if refused else Outcome.accepted
    reason = message.data.reason if isinstance(message, CommandRejected) else None
    details: dict[str, Any] = {"command_type": data.command_type}
    if isinstance(message, CommandAccepted) and message.data.result is not None:
        details["result"] = message.data.result  # what it did, in figures (MIGRATE_TRADE_DB: rows per table)
    session.add(_next_row(asked, message, outcome, reason, details))
    return True


def _next_row(
    asked: AuditEntry, message: Envelope, outcome: Outcome, reason: str | None, details: dict[str, Any]
) -> AuditEntry:
    """A later row of the control action ``asked`` (its ``requested`` row): same actor, target and ids."""
    return AuditEntry(
        occurred_at=message.occurred_at,
        actor_id=asked.actor_id,
        actor=asked.actor,
        via=asked.via,
        action=asked.action,
        target_type=asked.target_type,
        target_id=asked.target_id,
        outcome=outcome.value,
        reason=reason,
        correlation_id=asked.correlation_id,
        details={"gateway": message.source} | details,
        command_id=asked.command_id,
    )


# The state each control action asks for: its ``done`` row is written when the bot's reports reach it.
GOALS = {
    "bot.start": "running",
    "bot.restart": "running",
    "bot.resume": "running",
    "bot.pause": "paused",
    "bot.stop": "stopped",
}


async def record_command_done(
    session: AsyncSession, bot_id: uuid.UUID, reached: str, message: Envelope, reason: str | None = None
) -> bool:
    """After a bot's actual state changed to ``reached``: the final row of the latest control action sent to it,
    ``done`` when that is the state it asked for, ``failure`` (with ``reason``) when the bot failed instead.

    Only the latest action counts (a later one supersedes it), and only once: a row with this command's final
    outcome already there (a redelivered report, a state reached twice) adds nothing. A force-exit of one trade is
    done when its ``TRADE_CLOSED`` arrives (``reached`` is ``closed``); of all, when a status report finds no open
    trade left where the one before had some (``flat``)."""
    exits = reached in ("closed", "flat")
    actions = ("bot.forceexit",) if exits else tuple(GOALS)
    asked = (
        await session.execute(
            select(AuditEntry)
            .where(
                AuditEntry.target_type == "bot",
                AuditEntry.target_id == str(bot_id),
                AuditEntry.action.in_(actions),
                AuditEntry.outcome == Outcome.requested.value,
                AuditEntry.command_id.is_not(None),
            )
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if asked is None:
        return False
    if exits:
        wanted = str((asked.details or {}).get("trade_id"))
        closed = str(message.data.trade_id) if isinstance(message, TradeClosed) else None
        if wanted != ("all" if reached == "flat" else closed):
            return False
        outcome = Outcome.done
    elif reached == GOALS[asked.action]:
        outcome = Outcome.done
    elif reached == "failed" and GOALS[asked.action] == "running":
        outcome = Outcome.failure
    else:
        return False
    final = (
        await session.execute(
            select(AuditEntry.id)
            .where(
                AuditEntry.command_id == asked.command_id,
                AuditEntry.outcome.in_((Outcome.done.value, Outcome.failure.value, Outcome.refused.value)),
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    if final is not None:
        return False
    reason = reason if outcome is Outcome.failure else None
    session.add(_next_row(asked, message, outcome, reason, {"reached": reached}))
    return True
