"""One request-weight budget for the host's IP: spent up to its share, then a fair queue to the next minute,
refusals of its own past ``max_wait``, and silence upstream after a 429 or a 418."""

from __future__ import annotations

import asyncio

import pytest

from trading_gateway.relay.budget import Budget, Refused


class Clock:
    """Epoch seconds the test moves (the budget's minutes are calendar minutes, like the exchange's)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def minute_start(n: int = 28_000_000) -> float:
    return n * 60.0


async def test_weight_is_spent_up_to_the_share_and_the_exchange_count_wins_when_higher() -> None:
    clock = Clock(minute_start() + 10)
    budget = Budget(100, share=0.5, clock=clock)
    for _ in range(5):
        assert await budget.acquire("a", 10) == 0.0
    assert budget.used == 50
    budget.heard(200, used=80, retry_after=None)  # others on this IP spent weight too
    assert budget.used == 80
    with pytest.raises(Refused) as refused:  # 50 s to the next minute: longer than max_wait
        await budget.acquire("a", 1)
    assert (refused.value.status, round(refused.value.retry_after)) == (429, 50)
    assert "spent (80 of 100)" in refused.value.reason
    clock.now = minute_start() + 60  # a new minute: nothing used
    assert (budget.used, await budget.acquire("a", 40)) == (0, 0.0)


async def test_past_the_budget_bots_wait_for_the_next_minute_and_take_turns() -> None:
    clock = Clock(minute_start() + 59.9)
    budget = Budget(30, share=1.0, max_wait=5.0, clock=clock)
    await budget.acquire("greedy", 30)
    order: list[str] = []

    async def ask(bot: str) -> None:
        await budget.acquire(bot, 10)
        order.append(bot)

    tasks = [asyncio.create_task(ask("greedy")) for _ in range(4)] + [asyncio.create_task(ask("small"))]
    await asyncio.sleep(0)
    assert budget.queued == 5
    clock.now = minute_start() + 60.01  # the minute the timer wakes up in
    await asyncio.wait_for(asyncio.gather(*tasks[:2], tasks[4]), timeout=5)
    # 30 of weight in the new minute: greedy, small, greedy; greedy's last two wait for the minute after.
    assert order == ["greedy", "small", "greedy"]
    assert budget.queued == 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert budget.queued == 0  # the cancelled left the queue


async def test_after_a_429_or_a_418_nothing_goes_out_until_its_retry_after() -> None:
    clock = Clock(minute_start() + 1)
    budget = Budget(6000, clock=clock)
    budget.heard(429, used=6000, retry_after=20)
    with pytest.raises(Refused) as told:
        await budget.acquire("a", 1)
    assert (told.value.status, round(told.value.retry_after)) == (429, 20)
    budget.heard(418, used=None, retry_after=120)
    with pytest.raises(Refused) as banned:
        await budget.acquire("b", 1)
    assert (banned.value.status, round(banned.value.retry_after)) == (418, 120)
    assert "banned" in banned.value.reason
    assert budget.view()["bans"] == 1
    assert budget.view()["blocked_for_seconds"] == 120
    clock.now += 121
    assert await budget.acquire("b", 1) == 0.0
    assert budget.view()["refused"] == 2
