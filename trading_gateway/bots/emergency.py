"""Emergency stop: per bot ``stopentry`` → ``forceexit all`` → ``stop`` → terminate; many bots in parallel.

The order matters: ``forceexit`` only works while Freqtrade's trader is running or paused, so
entries are stopped first (``stopentry`` also takes a ``stopped`` bot to ``paused``, which makes
``forceexit`` possible again), then every open trade gets a market exit, then the trader is stopped
and the process terminated (SIGTERM to its group, SIGKILL after the grace period).

Decisions:

- Every step runs even when an earlier one failed, and each failure is reported in ``steps``;
  nothing is retried. Once the API does not answer at all (a hung bot), the remaining REST steps
  are skipped and the process is terminated at once: with 5 s per call a hung bot costs 5 s plus
  the grace period, not a minute of timeouts.
- After ``forceexit all`` the bot's open trades are polled until none is left or ``exit_wait``
  seconds have passed (a dry-run market exit fills at once; a live one takes the exchange's time;
  with the exchange down it fails and the trade stays open). Trades still open are counted in the
  bot's SQLite database once its process is gone (what a restarted bot will find; the API's count
  when the database can't be read): they stay there and a restarted bot manages them again.
- The outcome is ``halted`` once the process is gone (whatever was left open, which ``detail``
  tells), ``not_running`` when there was no process, ``failed`` when the process could not be ended.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from shared.bus.messages import EmergencyOutcome
from shared.logging import get_logger
from trading_gateway.bots.client import BotApiError, BotUnreachable, FreqtradeClient
from trading_gateway.bots.files import BotFiles
from trading_gateway.bots.process import BotProcess
from trading_gateway.bots.trade_store import read_rows

log = get_logger(__name__)
T = TypeVar("T")
EMERGENCY_API_TIMEOUT = 5.0  # seconds per REST call (forceexit: its own, longer)


@dataclass(frozen=True)
class EmergencyResult:
    bot_id: str
    outcome: Literal["halted", "not_running", "failed"]
    trades_open_before: int | None = None  # None when the bot's open trades could not be read
    trades_closed: int = 0
    trades_left_open: int = 0
    left_open_ids: tuple[int, ...] = ()
    paused_after: float | None = None  # seconds from the start until stopentry was accepted
    exited_after: float | None = None  # seconds from the start until the process was gone
    steps: tuple[str, ...] = field(default=())
    detail: str | None = None

    def to_message(self) -> EmergencyOutcome:
        """The bus payload (the bot id must be the bot's UUID)."""
        return EmergencyOutcome(
            bot_id=uuid.UUID(self.bot_id),
            outcome=self.outcome,
            trades_closed=self.trades_closed,
            trades_left_open=self.trades_left_open,
            detail=None if self.detail is None else self.detail[:2000],
            paused_after_seconds=None if self.paused_after is None else round(self.paused_after, 3),
            exited_after_seconds=None if self.exited_after is None else round(self.exited_after, 3),
        )


@dataclass(frozen=True)
class FleetEmergencyResult:
    results: list[EmergencyResult]
    seconds_to_all_paused: float | None  # None when a running bot never accepted stopentry
    seconds_to_all_exited: float | None  # None when a process could not be ended
    seconds: float


def _trade_ids(trades: list[dict[str, Any]]) -> tuple[int, ...]:
    return tuple(int(t["trade_id"]) for t in trades if "trade_id" in t)


def open_trade_ids_in_db(files: BotFiles, database_url: str | None = None) -> tuple[int, ...] | None:
    """The bot's open trades as its database says (None when it can't be read): its SQLite file, or its PostgreSQL
    database at ``database_url``. Blocking: run it in a thread.

    Safe while the bot runs (SQLite in WAL mode: readers never block the writer; PostgreSQL: a read-only session) and
    the only source left when its API no longer answers.
    """
    rows = read_rows(files, database_url, "SELECT id FROM trades WHERE is_open ORDER BY id")
    return None if rows is None else tuple(int(r[0]) for r in rows)


async def emergency_stop_bot(
    client: FreqtradeClient,
    process: BotProcess,
    *,
    grace: float,
    exit_wait: float = 10.0,
    started: float | None = None,
    database_url: str | None = None,
) -> EmergencyResult:
    """Stop one bot the emergency way; never raises for the bot's failures, reports them.

    Once the API does not answer at all (a hung bot), the remaining REST steps are skipped and the
    process is terminated at once. Trades left open are counted in the bot's database once its
    process is gone (what a restarted bot will find), else from its API.

    :param grace: seconds between SIGTERM and SIGKILL.
    :param exit_wait: seconds to wait for the exits ``forceexit all`` created to close the trades.
    :param started: ``time.monotonic()`` at which the emergency began (timings are measured from it).
    """
    t0 = time.monotonic() if started is None else started
    bot_id = process.bot_id
    steps: list[str] = []
    if not process.is_alive():
        return EmergencyResult(bot_id, "not_running", steps=("no process",), detail="the bot was not running")
    api_answers = True

    async def rest(name: str, call: Callable[[], Awaitable[T]]) -> T | None:
        nonlocal api_answers
        if not api_answers:
            steps.append(f"{name}: skipped (the API does not answer)")
            return None
        try:
            result = await call()
        except BotUnreachable as exc:
            api_answers = False
            steps.append(f"{name} failed: {exc}")
            return None
        except BotApiError as exc:
            steps.append(f"{name} failed: {exc}")
            return None
        if isinstance(result, str):
            steps.append(f"{name}: {result}")
        return result

    paused_after: float | None = None
    if await rest("stopentry", client.stopentry) is not None:
        paused_after = time.monotonic() - t0

    api_open = await rest("read open trades", client.status)
    before: tuple[int, ...] | None = (
        _trade_ids(api_open)
        if api_open is not None
        else await asyncio.to_thread(open_trade_ids_in_db, process.files, database_url)
    )
    left: tuple[int, ...] | None = before
    if before is None or before:
        await rest("forceexit all", lambda: client.forceexit("all"))
        deadline = time.monotonic() + exit_wait
        while api_answers:
            now_open = await rest("read open trades", client.status)
            if now_open is None:
                break
            left = _trade_ids(now_open)
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)

    await rest("stop", client.stop)

    outcome: Literal["halted", "failed"] = "halted"
    exited_after: float | None = None
    try:
        stopped = await process.terminate(grace)
        exited_after = time.monotonic() - t0
        steps.append(f"process ended ({stopped.signal}, exit code {stopped.exit_code})")
        in_db = await asyncio.to_thread(open_trade_ids_in_db, process.files, database_url)
        if in_db is not None:
            left = in_db
    except (OSError, RuntimeError) as exc:
        outcome = "failed"
        steps.append(f"terminate failed: {exc}")

    left_ids = left or ()
    closed = len(set(before) - set(left_ids)) if before is not None else 0
    detail_parts = []
    if left_ids:
        detail_parts.append(f"{len(left_ids)} trade(s) left open (they stay in the bot's database): {list(left_ids)}")
    if left is None:
        detail_parts.append("its open trades could not be read")
    detail_parts.extend(s for s in steps if "failed" in s)
    result = EmergencyResult(
        bot_id=bot_id,
        outcome=outcome,
        trades_open_before=None if before is None else len(before),
        trades_closed=closed,
        trades_left_open=len(left_ids),
        left_open_ids=tuple(left_ids),
        paused_after=paused_after,
        exited_after=exited_after,
        steps=tuple(steps),
        detail="; ".join(detail_parts) or None,
    )
    log.warning(
        "bot emergency-stopped",
        bot_id=bot_id,
        outcome=outcome,
        trades_closed=closed,
        trades_left_open=len(left_ids),
        seconds=None if exited_after is None else round(exited_after, 2),
    )
    return result


async def emergency_stop_all(
    processes: Sequence[BotProcess],
    *,
    grace: float,
    exit_wait: float = 10.0,
    started: float | None = None,
    database_urls: Mapping[str, str] | None = None,
) -> FleetEmergencyResult:
    """Emergency-stop every bot at once; one outcome per bot, in the order given.

    :param started: ``time.monotonic()`` at which the emergency began (default: now); timings count from it.
    :param database_urls: the PostgreSQL trade database of each bot that has one, by bot id.
    """
    urls = database_urls or {}
    t0 = time.monotonic() if started is None else started

    async def one(process: BotProcess) -> EmergencyResult:
        try:
            async with process.client(timeout=EMERGENCY_API_TIMEOUT) as client:
                return await emergency_stop_bot(
                    client, process, grace=grace, exit_wait=exit_wait, started=t0, database_url=urls.get(process.bot_id)
                )
        except Exception as exc:  # a bug must not keep the other bots from stopping
            log.exception("emergency stop of a bot failed", bot_id=process.bot_id)
            return EmergencyResult(process.bot_id, "failed", detail=f"{type(exc).__name__}: {exc}")

    results = list(await asyncio.gather(*(one(p) for p in processes)))
    ran = [r for r in results if r.outcome != "not_running"]
    paused = [r.paused_after for r in ran]
    exited = [r.exited_after for r in ran]
    return FleetEmergencyResult(
        results=results,
        seconds_to_all_paused=max((p for p in paused if p is not None), default=0.0)
        if all(p is not None for p in paused)
        else None,
        seconds_to_all_exited=max((e for e in exited if e is not None), default=0.0)
        if all(e is not None for e in exited)
        else None,
        seconds=time.monotonic() - t0,
    )
