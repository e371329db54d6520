"""The gateway's heartbeat: who it is, how loaded, every few seconds on ``freqfleet:events``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from shared.bus import Publisher
from shared.bus.messages import GatewayHeartbeat, GatewayHeartbeatData
from shared.bus.streams import EVENTS_STREAM
from shared.logging import get_logger
from trading_gateway.config import GatewaySettings

log = get_logger(__name__)

VERSION = "0.1.0"


class Heartbeat:
    def __init__(
        self,
        settings: GatewaySettings,
        publisher: Publisher,
        bots_running: Callable[[], int] = lambda: 0,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.bots_running = bots_running
        self.capacity = capacity  # default: max_bots minus the bots running
        self.started_at = datetime.now(UTC)
        self.sent = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def message(self) -> GatewayHeartbeat:
        running = self.bots_running()
        return GatewayHeartbeat(
            source=f"gateway:{self.settings.gateway_id}",
            data=GatewayHeartbeatData(
                gateway_id=self.settings.gateway_id,
                host=socket.gethostname(),
                version=VERSION,
                started_at=self.started_at,
                bots_running=running,
                capacity=max(0, self.capacity() if self.capacity else self.settings.max_bots - running),
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
