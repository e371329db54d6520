"""The relay's cache: lifetimes, the memory bound, and identical requests in flight sharing one fetch."""

from __future__ import annotations

import asyncio

import pytest

from trading_gateway.relay.cache import Answer, AnswerCache, cache_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(body: bytes = b"[]") -> Answer:
    return Answer(200, (("content-type", "application/json"),), body)


def test_keys_ignore_the_order_of_parameters() -> None:
    assert cache_key("/api/v3/klines", {"symbol": "A", "interval": "1m"}) == cache_key(
        "/api/v3/klines", {"interval": "1m", "symbol": "A"}
    )
    assert cache_key("/api/v3/klines", {"symbol": "A"}) != cache_key("/api/v3/klines", {"symbol": "B"})


def test_answers_live_their_lifetime_and_the_least_recently_used_go_first() -> None:
    clock = Clock()
    cache = AnswerCache(max_bytes=30, clock=clock)
    cache.put("a", answer(b"x" * 10), 1.0)
    cache.put("b", answer(b"y" * 10), float("inf"))
    assert cache.get("a") is not None
    clock.now += 1.0
    assert cache.get("a") is None  # its second is over
    assert cache.get("b") is not None
    cache.put("c", answer(b"z" * 10), float("inf"))
    cache.get("b")  # b used after c
    cache.put("d", answer(b"w" * 15), float("inf"))  # 35 bytes: the least recently used (c) goes
    assert (cache.get("c"), cache.get("b") is not None, cache.get("d") is not None) == (None, True, True)
    assert cache.bytes == 25
    cache.put("e", answer(b"v" * 31), float("inf"))  # larger than the whole cache: not kept, nothing evicted
    assert (cache.get("e"), len(cache)) == (None, 2)
    cache.put("f", answer(), 0.0)  # a lifetime of nothing: not kept
    assert cache.get("f") is None


async def test_identical_requests_in_flight_share_one_fetch() -> None:
    cache = AnswerCache(max_bytes=1000)
    calls = 0
    release = asyncio.Event()

    async def fetch() -> Answer:
        nonlocal calls
        calls += 1
        await release.wait()
        return answer(b"[1]")

    waiting = [asyncio.create_task(cache.coalesced("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting)
    assert calls == 1
    assert sorted(shared for _, shared in results) == [False, True, True, True, True]
    assert {a.body for a, _ in results} == {b"[1]"}

    # A failed fetch fails every request that waited on it, and the next one fetches again.
    async def broken() -> Answer:
        await asyncio.sleep(0.01)
        raise ConnectionError("upstream down")

    failing = [asyncio.create_task(cache.coalesced("k", broken)) for _ in range(3)]
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert (await cache.coalesced("k", fetch))[1] is False


async def test_a_cancelled_fetch_is_an_error_for_those_who_shared_it() -> None:
    cache = AnswerCache(max_bytes=1000)
    never = asyncio.Event()

    async def slow() -> Answer:
        await never.wait()
        return answer()

    first = asyncio.create_task(cache.coalesced("k", slow))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.coalesced("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(ConnectionError):
        await second
