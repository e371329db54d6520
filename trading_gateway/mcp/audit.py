"""Every MCP tool call and resource read, audited in the management server's audit log.

The gateway publishes one ``MCP_CALL`` event per call on ``freqfleet:events``; the management server's
events consumer writes it to the audit log with ``via = "mcp"`` (see
``management_server/audit/events.py``). It goes through the gateway's :class:`EventPublisher`, so a
call made while Redis is away is kept in the gateway's outbox and audited when Redis is back. The
event is published before the tool's answer is sent.

What is recorded: the caller (user id, role, token type and token id; never the token), the tool
(or resource URI), its arguments with secret-named keys masked and long values cut, the outcome
(``success``, ``failure``, ``denied``) with the reason, the bot it was about, the client's IP, the
transport and how long it took.

Refused and malformed calls are sampled, so that an agent can't turn the audit into a flood of the events
stream: the first refusal of a (user, tool, reason) is audited at once, the next ones within
``FREQFLEET_MCP_REFUSAL_SAMPLE_SECONDS`` are only counted, and the first one after that is audited with the count
(``repeated``). Successful calls are audited one by one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from shared.bus.messages import McpCall, McpCallData
from shared.logging import get_logger, redact
from trading_gateway.bus.events import EventPublisher
from trading_gateway.mcp.auth import Caller

log = get_logger(__name__)

MAX_ARGUMENTS_JSON = 4000
MAX_VALUE = 500

Outcome = Literal["success", "failure", "denied"]


@dataclass(frozen=True)
class Target:
    type: str
    id: str


def audited_arguments(arguments: Any) -> dict[str, Any]:
    """The arguments as the audit log keeps them: secret-named keys masked, long strings cut, bounded."""
    if not isinstance(arguments, dict):
        return {} if arguments is None else {"_not_an_object": type(arguments).__name__}

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_VALUE:
            return value[:MAX_VALUE] + "..."
        if isinstance(value, dict):
            return {str(k)[:100]: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value[:100]]
        return value

    masked = cut(redact(arguments))
    size = len(json.dumps(masked, default=str))
    if size > MAX_ARGUMENTS_JSON:
        return {"_truncated": True, "_size": size, "_keys": sorted(str(k)[:100] for k in masked)[:50]}
    result: dict[str, Any] = json.loads(json.dumps(masked, default=str))
    return result


class McpAuditor:
    def __init__(self, events: EventPublisher, gateway_id: str, sample_seconds: float = 60.0) -> None:
        self.events = events
        self.gateway_id = gateway_id
        self.sample_seconds = sample_seconds
        self._refusals: dict[tuple[str, str, str], tuple[float, int]] = {}  # key -> (audited at, unaudited since)
        self.sampled = 0  # refusals counted, not audited one by one

    def _sampled(self, caller: Caller, name: str, outcome: Outcome, reason: str | None) -> int | None:
        """None: don't audit this refusal (counted); else how many like it went unaudited before it."""
        key = (str(caller.subject), name[:200], f"{outcome}:{(reason or '')[:200]}")
        now = time.monotonic()
        audited_at, unaudited = self._refusals.get(key, (-math.inf, 0))
        if now - audited_at < self.sample_seconds:
            self._refusals[key] = (audited_at, unaudited + 1)
            self.sampled += 1
            return None
        self._refusals[key] = (now, 0)
        if len(self._refusals) > 50_000:  # forget keys whose window is over
            for old in [k for k, (at, _) in self._refusals.items() if now - at >= self.sample_seconds]:
                del self._refusals[old]
        return unaudited

    async def record(
        self,
        caller: Caller,
        *,
        kind: Literal["tool", "resource"],
        name: str,
        arguments: Any,
        outcome: Outcome,
        reason: str | None,
        target: Target | None,
        duration_ms: float,
        correlation_id: str,
    ) -> None:
        """Publish the call's audit event (kept in the outbox while Redis is away); never raises. A refusal is
        sampled (see the module's docstring)."""
        claims = caller.claims
        repeated = 0
        if outcome != "success":
            counted = self._sampled(caller, name, outcome, reason)
            if counted is None:
                return
            repeated = counted
        try:
            message = McpCall(
                source=f"gateway:{self.gateway_id}",
                correlation_id=correlation_id,
                data=McpCallData(
                    gateway_id=self.gateway_id,
                    actor_id=claims.subject,
                    role=claims.role[:32],
                    token_type="pat" if claims.token_type.value == "pat" else "access",
                    token_id=claims.token_id,
                    transport=caller.transport,
                    kind=kind,
                    name=name[:200] or "?",
                    arguments=audited_arguments(arguments),
                    outcome=outcome,
                    reason=None if reason is None else reason[:2000],
                    target_type=None if target is None else target.type[:32],
                    target_id=None if target is None else target.id[:64],
                    client_ip=None if caller.client_ip is None else caller.client_ip[:64],
                    duration_ms=round(max(0.0, duration_ms), 3),
                    repeated=repeated,
                ),
            )
            await self.events.publish(message)
        except Exception:  # the call happened; a lost audit row is logged loudly, not turned into a failed call
            log.exception("mcp call not audited", tool=name[:200], outcome=outcome, actor=caller.label)
