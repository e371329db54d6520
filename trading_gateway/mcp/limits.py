"""How much one user may ask of the gateway's MCP server: calls per minute, connections, sessions, messages.

All in the gateway's memory (a gateway's MCP traffic is its own; the management server limits each user's calls
to it as well). Over a limit, the agent gets an answer that says which limit and when to try again: a tool error
or a JSON-RPC error for a call, an HTTP 429 with ``Retry-After`` for a connection or a session.

- **Calls**: ``FREQFLEET_MCP_CALLS_PER_MINUTE`` tool calls and resource reads per user (a moving window over all
  the user's agents and transports).
- **WebSocket**: ``FREQFLEET_MCP_CONNECTIONS_PER_USER`` connections per user, ``FREQFLEET_MCP_IN_FLIGHT_PER_CONNECTION``
  unanswered requests per connection, frames of at most ``FREQFLEET_MCP_MAX_MESSAGE_BYTES``.
- **Streamable HTTP**: ``FREQFLEET_MCP_SESSIONS_PER_USER`` sessions per user and ``FREQFLEET_MCP_MAX_SESSIONS`` in
  all, each ending after ``FREQFLEET_MCP_SESSION_IDLE`` seconds unused; bodies of at most the message limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field


class LimitReached(Exception):
    """Over a limit; the message says which, and ``retry_after`` when to try again (seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class CallRate:
    """A moving window of calls per user."""

    per_minute: int
    window: float = 60.0
    _hits: dict[str, deque[float]] = field(default_factory=dict)

    def hit(self, user: str, now: float | None = None) -> None:
        """Count one call of ``user``.

        :raises LimitReached: the user made ``per_minute`` calls in the last minute already.
        """
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(user, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.per_minute:
            retry = max(1, math.ceil(hits[0] + self.window - now))
            raise LimitReached(
                f"Too many calls: at most {self.per_minute} per minute per user (FREQFLEET_MCP_CALLS_PER_MINUTE); "
                f"try again in {retry} s.",
                retry,
            )
        hits.append(now)
        if len(self._hits) > 10_000:  # forget users whose window is empty
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
                del self._hits[key]

    def wait(self, user: str, now: float | None = None) -> float:
        """Seconds until ``user`` may call again (0: now). A WebSocket stops reading that long instead of
        refusing call after call: the flood waits in the client's socket, not in the gateway's event loop."""
        now = time.monotonic() if now is None else now
        hits = self._hits.get(user)
        if not hits or len(hits) < self.per_minute:
            return 0.0
        return max(0.0, hits[-self.per_minute] + self.window - now)


@dataclass
class Connections:
    """Open WebSocket connections per user."""

    per_user: int
    _open: dict[str, int] = field(default_factory=dict)

    def open(self, user: str) -> None:
        """:raises LimitReached: the user has ``per_user`` connections open already."""
        if self._open.get(user, 0) >= self.per_user:
            raise LimitReached(
                f"Too many MCP connections: at most {self.per_user} open per user "
                "(FREQFLEET_MCP_CONNECTIONS_PER_USER); close one first.",
                5,
            )
        self._open[user] = self._open.get(user, 0) + 1

    def close(self, user: str) -> None:
        left = self._open.get(user, 0) - 1
        if left > 0:
            self._open[user] = left
        else:
            self._open.pop(user, None)


@dataclass
class Sessions:
    """Streamable HTTP sessions per user, as the gateway saw them opened and used (idle ones are forgotten)."""

    per_user: int
    idle: float
    _used: dict[str, dict[str, float]] = field(default_factory=dict)  # user -> session id -> last used

    def _live(self, user: str, now: float) -> dict[str, float]:
        sessions = self._used.get(user, {})
        for session_id in [s for s, at in sessions.items() if at <= now - self.idle]:
            del sessions[session_id]
        return sessions

    def may_open(self, user: str, now: float | None = None) -> None:
        """:raises LimitReached: the user has ``per_user`` sessions in use."""
        now = time.monotonic() if now is None else now
        sessions = self._live(user, now)
        if len(sessions) >= self.per_user:
            retry = max(1, math.ceil(min(sessions.values()) + self.idle - now))
            raise LimitReached(
                f"Too many MCP sessions: at most {self.per_user} per user (FREQFLEET_MCP_SESSIONS_PER_USER); "
                f"reuse one, end one (DELETE with its Mcp-Session-Id) or wait {retry} s for an idle one to expire.",
                retry,
            )

    def used(self, user: str, session_id: str, now: float | None = None) -> None:
        self._used.setdefault(user, {})[session_id] = time.monotonic() if now is None else now

    def ended(self, user: str, session_id: str) -> None:
        self._used.get(user, {}).pop(session_id, None)


@dataclass
class McpLimits:
    calls: CallRate
    connections: Connections
    sessions: Sessions
    max_message_bytes: int
    in_flight_per_connection: int
