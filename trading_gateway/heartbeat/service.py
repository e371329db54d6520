"""The gateway's heartbeat: who it is, how loaded, every few seconds on ``freqfleet:events``.

Each GATEWAY_HEARTBEAT carries the gateway's id, host and version, its free capacity, its bots by
actual state, the inventory of its bots (id, generation, desired and actual state; the management server
reconciles it with what should be), and the host's CPU and memory use (psutil). The CPU figure is the
host's use since the previous heartbeat (``psutil.cpu_percent`` without an interval: nothing blocks), primed when the
heartbeat is made so that even the first figure covers a real interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData, InventoryEntry
from shared.bus.publisher import Publisher
from shared.bus.streams import EVENTS_STREAM
from shared.logging import get_logger
from trading_gateway.config import GatewaySettings

log = get_logger(__name__)

VERSION = "0.1.0"


@dataclass(frozen=True)
class HostLoad:
    cpu_percent: float
    cpu_count: int | None
    memory_used_bytes: int
    memory_total_bytes: int
    memory_percent: float


def host_load() -> HostLoad:
    """The host's CPU use since the previous call (any caller's) and its memory use now."""
    memory = psutil.virtual_memory()
    used = max(0, memory.total - memory.available)
    return HostLoad(
        cpu_percent=min(100.0, max(0.0, float(psutil.cpu_percent(interval=None)))),
        cpu_count=psutil.cpu_count(logical=True),
        memory_used_bytes=used,
        memory_total_bytes=memory.total,
        memory_percent=round(100.0 * used / memory.total, 1) if memory.total else 0.0,
    )


class Heartbeat:
    def __init__(
        self,
        settings: GatewaySettings,
        publisher: Publisher,
        bots_running: Callable[[], int] = lambda: 0,
        capacity: Callable[[], int] | None = None,
        bots_by_state: Callable[[], Mapping[str, int]] = dict,
        inventory: Callable[[], list[InventoryEntry]] | None = None,
        relay: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.bots_running = bots_running
        self.capacity = capacity  # default: max_bots minus the bots running
        self.bots_by_state = bots_by_state
        self.inventory = inventory
        self.relay = relay
        self.started_at = datetime.now(UTC)
        self.sent = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        psutil.cpu_percent(interval=None)  # primes the CPU counter: the first beat measures from here

    def message(self) -> GatewayHeartbeat:
        running = self.bots_running()
        load = host_load()
        return GatewayHeartbeat(
            source=f"gateway:{self.settings.gateway_id}",
            data=GatewayHeartbeatData(
                gateway_id=self.settings.gateway_id,
                host=socket.gethostname(),
                version=VERSION,
                started_at=self.started_at,
                bots_running=running,
                capacity=max(0, self.capacity() if self.capacity else self.settings.max_bots - running),
                bots_by_state=dict(self.bots_by_state()),
                cpu_percent=load.cpu_percent,
                cpu_count=load.cpu_count,
                memory_used_bytes=load.memory_used_bytes,
                memory_total_bytes=load.memory_total_bytes,
                memory_percent=load.memory_percent,
                inventory=None if self.inventory is None else self.inventory(),
                relay=None if self.relay is None else self.relay(),
                api_url=self.settings.api_url,
            ),
        )

    async def beat(self) -> None:
        await self.publisher.publish(EVENTS_STREAM, self.message())
        self.sent += 1

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.beat()
            except Exception as exc:  # Redis away: the next beat tries again
                log.warning("heartbeat not sent", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.heartbeat_interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="gateway-heartbeat")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
