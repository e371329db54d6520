"""What /api/v1/gateways takes and gives."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GatewayEnroll(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enrollment: str = Field(
        min_length=1,
        max_length=300,
        description="The line `freqfleet gateways identity` prints on the gateway's host: "
        "ffgw1:<gateway id>:<signing key>:<sealing key> (public keys only).",
    )


class GatewayOut(BaseModel):
    gateway_id: str
    status: str = Field(description="enrolled, revoked, or unenrolled (heard of, never enrolled: ignored).")
    live: bool = Field(description="Enrolled and heard from within the last 15 s.")
    signing_key: str | None
    sealing_key: str | None
    enrolled_at: datetime | None
    revoked_at: datetime | None
    host: str | None
    version: str | None
    api_url: str | None
    last_seen_at: datetime | None
    bots_running: int
    capacity: int
    load: dict[str, Any] | None = Field(
        default=None,
        description="The host as the last heartbeat reported it: cpu_percent, cpu_count, memory_percent, "
        "memory_used_bytes, memory_total_bytes, bots_by_state, and its market-data relay's numbers (relay: per "
        "exchange the IP's weight this minute and its limit, upstream requests, hits, misses, refused; the cache) "
        "(what the gateway's version reports).",
    )
    draining: bool = Field(
        default=False,
        description="Being drained: it takes no new bot, and its bots are moved to other gateways one at a time "
        "(each stopped, then started elsewhere with its trades) until it runs none; until undrained.",
    )
    drain_requested_at: datetime | None = None


class GatewayRevoked(BaseModel):
    gateway: GatewayOut
    bots_orphaned: int = Field(description="Bots that ran there and are now orphaned (start them again elsewhere).")
