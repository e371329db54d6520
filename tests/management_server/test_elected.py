"""management_server/elected.py against a real PostgreSQL: of several processes' Elected, one runs the work at a
time; when it stops, or its connection is cut, another takes over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from management_server.config import ManagementSettings
from management_server.db import create_engine
from management_server.elected import Elected
from tests.helpers import until

KEY = 91_000_001


@dataclass
class Recorded:
    """The work: it only says when it runs."""

    log: list[str]
    name: str
    running: bool = field(default=False)

    def start(self) -> None:
        self.running = True
        self.log.append(f"{self.name} start")

    async def stop(self) -> None:
        self.running = False
        self.log.append(f"{self.name} stop")


@pytest_asyncio.fixture(loop_scope="session")
async def engines(management_settings: ManagementSettings) -> AsyncIterator[list[AsyncEngine]]:
    made = [create_engine(management_settings, background=True) for _ in range(3)]  # one per "process"
    yield made
    for engine in made:
        await engine.dispose()


async def test_one_process_runs_the_work_and_another_takes_over_when_it_ends_or_loses_the_database(
    engines: list[AsyncEngine],
) -> None:
    log: list[str] = []
    works: dict[str, Recorded] = {}

    def elected(name: str, engine: AsyncEngine) -> Elected:
        def make() -> Recorded:
            works[name] = Recorded(log, name)
            return works[name]

        return Elected(engine, name, KEY, make, retry=0.1)

    a, b = elected("a", engines[0]), elected("b", engines[1])
    a.start()
    b.start()
    try:
        await until(lambda: a.holding or b.holding, timeout=10, what="one to take the lock")
        first, second = (a, b) if a.holding else (b, a)
        await until(lambda: second.terms == 0 and len(log) == 1, timeout=1, what="the other to wait")
        assert not second.holding

        await first.stop()  # that process ends: the other takes over
        await until(lambda: second.holding, timeout=10, what="the other to take over")
        assert log == [f"{first.name} start", f"{first.name} stop", f"{second.name} start"]

        # The holder's connection is cut (the database restarted, a network fault): its work stops, the lock is free
        # again, and a process takes it (here the only one left, which had lost it).
        async with engines[2].connect() as admin:
            holders = (
                (
                    await admin.execute(
                        text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND granted"),
                        {"key": KEY},
                    )
                )
                .scalars()
                .all()
            )
            assert len(holders) == 1
            await admin.execute(select(func.pg_terminate_backend(holders[0])))
            await admin.commit()
        await until(lambda: not works[second.name].running, timeout=10, what="the cut-off holder to stop its work")
        await until(lambda: second.terms == 2 and second.holding, timeout=10, what="it to take the lock again")
    finally:
        await a.stop()
        await b.stop()
