"""The pool of loopback ports the gateway gives its bots' REST APIs.

A Freqtrade bot whose port is taken does not exit: it hangs with "address already in use" while
the other process answers its ``/ping``. So a port is handed out only when (a) none of our bots
holds it and (b) it can be bound on 127.0.0.1 right now (another program may hold one of the
range). The bind test uses ``SO_REUSEADDR`` like the bot's uvicorn does, so a port that only has
connections in TIME_WAIT counts as free (the bot can bind it), a listening or bound socket does not.

A check is not a reservation: between it and the bot's bind (about two seconds) someone else can
still take the port. The process layer closes that gap by checking the bot's identity after start.

Ports are handed out round-robin from where the last search stopped, so a port just released (its
old bot may still be going away) is the last to be handed out again.
"""

from __future__ import annotations

import errno
import socket


class NoFreePort(RuntimeError):
    """No port of the range can be given to a new bot; the message says why and what to change."""


def can_bind(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listening socket could be bound to ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


class PortPool:
    """Ports ``start``..``end`` (both included) for bots' APIs; which bot holds which port."""

    def __init__(self, start: int, end: int) -> None:
        if not 1024 <= start <= end <= 65535:
            raise ValueError(f"bad bot port range {start}-{end}: need 1024 <= start <= end <= 65535")
        self.start = start
        self.end = end
        self._held: dict[int, str] = {}
        self._cursor = start

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    @property
    def held(self) -> dict[int, str]:
        """Port → bot id, for the ports our bots hold."""
        return dict(self._held)

    @property
    def free_count(self) -> int:
        """Ports none of our bots holds (some may still be taken by other programs)."""
        return len(self) - sum(1 for port in self._held if port in self)

    def holder(self, port: int) -> str | None:
        return self._held.get(port)

    def acquire(self, bot_id: str) -> int:
        """A port no bot of ours holds and that can be bound now, marked as ``bot_id``'s.

        A bot that already holds a port gets it back only if it is still bindable (its old process
        is gone); else it gets another one and its old one is released.
        """
        foreign = 0
        size = len(self)
        for i in range(size):
            port = self.start + (self._cursor - self.start + i) % size
            holder = self._held.get(port)
            if holder is not None and holder != bot_id:
                continue
            if not can_bind(port):
                foreign += 1
                continue
            self.release_bot(bot_id)
            self._held[port] = bot_id
            self._cursor = self.start + (port - self.start + 1) % size
            return port
        ours = sum(1 for port in self._held if port in self)
        raise NoFreePort(
            f"no free port for bot {bot_id} in {self.start}-{self.end}: {ours} held by this gateway's bots, "
            f"{foreign} in use by other programs. Stop or delete bots, free those ports, or widen the range "
            "(FREQFLEET_BOT_PORT_RANGE_START / FREQFLEET_BOT_PORT_RANGE_END)."
        )

    def claim(self, port: int, bot_id: str) -> None:
        """Mark ``port`` as held by ``bot_id`` without a bind test (an adopted bot is listening on it).

        A port outside the range (the range changed while the bot ran) is tracked too, never handed out.
        """
        holder = self._held.get(port)
        if holder is not None and holder != bot_id:
            raise ValueError(f"port {port} is already held by bot {holder}")
        self.release_bot(bot_id)
        self._held[port] = bot_id

    def release(self, port: int) -> None:
        """Give ``port`` back to the pool (nothing happens when no bot held it)."""
        self._held.pop(port, None)

    def release_bot(self, bot_id: str) -> None:
        """Give back whatever port ``bot_id`` holds."""
        for port in [p for p, b in self._held.items() if b == bot_id]:
            del self._held[port]
