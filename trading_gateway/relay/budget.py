"""One request-weight budget for the host's IP at one exchange, shared fairly by its bots.

The exchange counts weight per IP per calendar minute and says the minute's sum in a header on every answer;
that sum (it counts what other programs on this IP spend too) and what the relay has sent this minute, whichever
is larger, is the weight used. A request that would take it past ``share`` of the limit waits for the next minute,
in a queue per bot served round-robin, so one bot with many pairs cannot starve the others; a request that would
wait longer than ``max_wait`` is answered ``429`` by the relay itself (the exchange never sees it, so it never
counts toward a ban). After a ``429`` from the exchange nothing is sent until its ``Retry-After``; after a ``418``
(the IP is banned) nothing is sent until the ban ends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


class Refused(Exception):
    """Not sent: the status the bot gets (429 or 418), the seconds it should wait, and why."""

    def __init__(self, status: int, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.reason = reason


@dataclass
class _Waiter:
    weight: int
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Budget:
    def __init__(
        self,
        limit: int,
        *,
        share: float = 0.9,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.share = share
        self.max_wait = max_wait
        self.clock = clock
        self.minute = int(clock() // 60)
        self.sent = 0  # weight the relay sent this minute
        self.reported = 0  # the exchange's own count this minute (its header)
        self.blocked_until = 0.0  # epoch seconds: nothing goes out before (a 429's Retry-After, or a 418's ban)
        self.blocked_status = 0
        self.bans = 0
        self.refused = 0
        self._queues: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def allowed(self) -> int:
        return int(self.limit * self.share)

    @property
    def used(self) -> int:
        self._roll()
        return max(self.sent, self.reported)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _roll(self) -> None:
        minute = int(self.clock() // 60)
        if minute != self.minute:
            self.minute, self.sent, self.reported = minute, 0, 0

    def _blocked(self) -> Refused | None:
        wait = self.blocked_until - self.clock()
        if wait <= 0:
            return None
        what = "is banned (418)" if self.blocked_status == 418 else "was told to wait (429)"
        return Refused(self.blocked_status, wait, f"the exchange's IP {what}: the relay sends nothing for {wait:.0f} s")

    async def acquire(self, bot: str, weight: int) -> float:
        """Wait until ``weight`` may be sent for ``bot``, and count it; the seconds waited.

        :raises Refused: the exchange said to stop, or the wait would be longer than ``max_wait``.
        """
        blocked = self._blocked()
        if blocked is not None:
            self.refused += 1
            raise blocked
        if not self.queued and self.used + weight <= self.allowed:
            self.sent += weight
            return 0.0
        wait = (self.minute + 1) * 60 - self.clock()
        if wait > self.max_wait:
            self.refused += 1
            raise Refused(429, wait, f"the IP's request weight for this minute is spent ({self.used} of {self.limit})")
        waiter = _Waiter(weight)
        self._queues.setdefault(bot, deque()).append(waiter)
        self._arm()
        started = self.clock()
        try:
            await waiter.future
        except asyncio.CancelledError:
            queue = self._queues.get(bot)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
            raise
        return self.clock() - started

    def _arm(self) -> None:
        if self._timer is None:
            delay = max(0.0, (self.minute + 1) * 60 - self.clock(), self.blocked_until - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay + 0.01, self._pump)

    def _pump(self) -> None:
        """Grant queued requests round-robin by bot while the minute's budget lasts."""
        self._timer = None
        blocked = self._blocked()
        if blocked is not None:
            for queue in self._queues.values():
                for waiter in queue:
                    if not waiter.future.done():
                        waiter.future.set_exception(blocked)
            self._queues.clear()
            return
        while self._queues:
            bot, queue = next(iter(self._queues.items()))
            waiter = queue[0]
            if self.used + waiter.weight > self.allowed:
                break
            queue.popleft()
            self._queues.move_to_end(bot)  # the next bot's turn
            if not queue:
                del self._queues[bot]
            if not waiter.future.done():
                self.sent += waiter.weight
                waiter.future.set_result(None)
        if self._queues:
            self._arm()

    def heard(self, status: int, used: int | None, retry_after: float | None) -> None:
        """What an answer of the exchange said: its count of the minute's weight, and whether to stop."""
        self._roll()
        if used is not None:
            self.reported = max(self.reported, used)
        if status in (418, 429):
            # Binance's 429 says how long to wait; without it, until the minute ends.
            wait = retry_after if retry_after is not None else (self.minute + 1) * 60 - self.clock()
            until = self.clock() + max(1.0, wait)
            if until > self.blocked_until or status == 418:
                self.blocked_until, self.blocked_status = max(until, self.blocked_until), status
            if status == 418:
                self.bans += 1
            self._arm()

    def view(self) -> dict[str, object]:
        blocked = self._blocked()
        return {
            "limit": self.limit,
            "allowed": self.allowed,
            "used_weight_1m": self.used,
            "queued": self.queued,
            "refused": self.refused,
            "bans": self.bans,
            "blocked_status": blocked.status if blocked else None,
            "blocked_for_seconds": math.ceil(blocked.retry_after) if blocked else 0,
        }
