"""Bodies of the gateway's fleet routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.bus.messages import EmergencyOutcome, TradeClosedData


class ErrorOut(BaseModel):
    detail: str


class BotOut(BaseModel):
    """A bot as this gateway runs it (no credential ever appears here)."""

    bot_id: uuid.UUID
    generation: int = Field(description="The newest generation applied for the bot.")
    desired: Literal["running", "paused", "stopped", "halted"]
    actual: Literal["stopped", "starting", "running", "paused", "stopping", "failed", "halted"]
    freqtrade_state: str | None = Field(description="Freqtrade's own state at the last status read.")
    pid: int | None
    port: int | None
    started_at: datetime | None
    freqtrade_version: str | None
    launcher: Literal["exec", "fork"] | None = Field(
        description="How its process started: forked by the gateway's launcher, or exec'd (FREQFLEET_BOT_LAUNCHER)."
    )
    last_status_at: datetime | None
    last_status_age_seconds: float | None
    open_trades: int
    crash_count: int = Field(description="Crashes within the crash-loop window.")
    last_error: str | None
    market_data: str | None = Field(
        default=None,
        description="How its process gets market data: `relay` (the gateway's market-data relay), or `direct` and "
        "why (no relay adapter for its exchange, the relay off, or started before the relay: relayed from its "
        "next start).",
    )
    relay: dict[str, float] | None = Field(
        default=None,
        description="Its numbers at the relay: requests, hits, misses, coalesced, private, refused, errors, weight "
        "sent upstream for it, seconds its requests waited for the budget.",
    )


class BotsOut(BaseModel):
    gateway_id: str
    bots: list[BotOut]


class EmergencyStopIn(BaseModel):
    """Either ``{"bot_ids": [...]}`` or ``{"scope": "all"}`` (every bot of this gateway)."""

    model_config = ConfigDict(extra="forbid")

    bot_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=10_000)
    scope: Literal["all"] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> EmergencyStopIn:
        if (self.bot_ids is None) == (self.scope is None):
            raise ValueError('give either "bot_ids" (a list of bot ids) or "scope": "all"')
        return self


class EmergencyStopOut(BaseModel):
    gateway_id: str
    seconds: float
    seconds_to_all_paused: float | None = Field(
        default=None, description="Seconds until every bot with a process took no new entries (None: one never did)."
    )
    seconds_to_all_exited: float | None = Field(
        default=None, description="Seconds until every bot with a process was gone (None: one could not be ended)."
    )
    results: list[EmergencyOutcome]


class BotTradesOut(BaseModel):
    """A bot's closed trades, each as in TRADE_CLOSED."""

    gateway_id: str
    bot_id: uuid.UUID
    source: Literal["api", "database", "none"] = Field(
        description="Read from the bot's REST API (it runs), its database (it does not), or nowhere (no database)."
    )
    trades: list[TradeClosedData]


class BotLogOut(BaseModel):
    gateway_id: str
    bot_id: uuid.UUID
    source: str = Field(description="Where the lines were read: the bot's API while it runs, else its log file.")
    lines: list[str] = Field(description="The last lines, oldest first, with the bot's secrets taken out.")
