"""Answers kept for as long as they stay true, within a memory bound, and identical requests in flight coalesced.

Keys are the request's path and its query, sorted: two bots asking for the same candles share one entry. An entry
lives until its deadline (``inf`` for closed candles); when the bytes kept pass the bound, the least recently used
entries go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]  # the upstream's, those worth passing on
    body: bytes


def cache_key(path: str, params: Mapping[str, str]) -> str:
    return path + "?" + "&".join(f"{k}={params[k]}" for k in sorted(params))


class AnswerCache:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._flights: dict[str, asyncio.Future[Answer]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Answer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        deadline, answer = found
        if self.clock() >= deadline:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: str, answer: Answer, seconds: float) -> None:
        if seconds <= 0 or len(answer.body) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self.clock() + seconds, answer)
        self.bytes += len(answer.body)
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= len(found[1].body)

    async def coalesced(self, key: str, fetch: Callable[[], Awaitable[Answer]]) -> tuple[Answer, bool]:
        """``fetch()``'s answer, or the answer of the same request already in flight; and whether it was shared."""
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight), True
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            answer = await fetch()
        except BaseException as exc:
            # Those who waited on it get the error too (a cancelled fetch as an error: they were not cancelled).
            shared = exc if isinstance(exc, Exception) else ConnectionError("the request they shared was cancelled")
            flight.set_exception(shared)
            flight.exception()  # retrieved: a flight nobody else waited for must not warn
            raise
        else:
            flight.set_result(answer)
            return answer, False
        finally:
            self._flights.pop(key, None)
