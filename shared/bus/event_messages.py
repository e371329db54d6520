"""The events a gateway reports on ``freqfleet:events``: their payloads and envelopes."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from shared.bus.envelope import BotId, Envelope, Generation, PairName, Payload, Sha256Hex


class CommandAcceptedData(Payload):
    command_id: uuid.UUID = Field(description="event_id of the command.")
    command_type: str
    bot_id: BotId | None = None
    result: dict[str, int] | None = Field(
        default=None, description="What it did, in figures (MIGRATE_TRADE_DB: the rows copied and checked, per table)."
    )


class CommandRejectedData(Payload):
    command_id: uuid.UUID
    command_type: str
    bot_id: BotId | None = None
    reason: str = Field(min_length=1, max_length=2000, description="What is wrong, in words a person can act on.")


class BotStartedData(Payload):
    bot_id: BotId
    generation: Generation
    pid: int = Field(ge=1)
    port: int = Field(ge=1, le=65535)
    freqtrade_version: str
    started_at: AwareDatetime
    launcher: Literal["exec", "fork"] | None = Field(
        default=None, description="How the process started: forked by the gateway's launcher, or exec'd."
    )


class BotStoppedData(Payload):
    bot_id: BotId
    generation: Generation
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=2000)


class BotFailedData(Payload):
    bot_id: BotId
    generation: Generation
    reason: str = Field(max_length=2000)
    crash_count: int = Field(default=0, ge=0)
    last_log_lines: list[str] = Field(default_factory=list, max_length=200)


class BotStatusData(Payload):
    bot_id: BotId
    generation: Generation
    state: str = Field(description="Freqtrade's state: running, paused (stopentry), stopped.")
    open_trades: list[dict[str, Any]] = Field(default_factory=list)
    profit: dict[str, Any] = Field(default_factory=dict)
    last_process_at: AwareDatetime | None = None


class TradeOpenedData(Payload):
    bot_id: BotId
    trade_id: int = Field(ge=0)
    pair: PairName
    is_short: bool = False
    open_date: AwareDatetime
    open_rate: float
    amount: float
    stake_amount: float
    enter_tag: str | None = None


class TradeClosedData(TradeOpenedData):
    close_date: AwareDatetime
    close_rate: float
    profit_abs: float
    profit_ratio: float
    exit_reason: str | None = None


class ModelLoadedData(Payload):
    bot_id: BotId
    model_id: uuid.UUID
    sha256: Sha256Hex
    load_seconds: float = Field(ge=0)


class ModelRejectedData(Payload):
    bot_id: BotId
    model_id: uuid.UUID
    reason: str = Field(max_length=2000)


class EmergencyOutcome(Payload):
    bot_id: BotId
    outcome: Literal["halted", "not_running", "failed"]
    trades_closed: int = Field(default=0, ge=0)
    trades_left_open: int = Field(default=0, ge=0)
    detail: str | None = Field(default=None, max_length=2000)
    paused_after_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds from the start of the emergency stop until the bot took no new entries (its "
        "stopentry was accepted); None when it did not (no process, or its API did not answer).",
    )
    exited_after_seconds: float | None = Field(
        default=None, ge=0, description="Seconds from the start of the emergency stop until its process was gone."
    )


class EmergencyStopCompletedData(Payload):
    command_id: uuid.UUID | None = Field(default=None, description="The EMERGENCY_STOP, if one caused it.")
    gateway_id: str
    results: list[EmergencyOutcome]
    seconds: float = Field(ge=0)
    seconds_to_all_paused: float | None = Field(
        default=None,
        ge=0,
        description="Seconds until every bot that had a process took no new entries; None when one never did.",
    )
    seconds_to_all_exited: float | None = Field(
        default=None,
        ge=0,
        description="Seconds until every bot that had a process was gone; None when one could not be ended.",
    )


class InventoryEntry(Payload):
    """One bot a gateway has, as it sees it: the generation of the last command it received, what it was told
    (desired) and what is (actual). ``settled`` is false while the gateway has not yet acted on that command
    (a pause it has taken but not yet sent to the bot): ``actual`` is then the state from before it."""

    bot_id: uuid.UUID
    generation: int = Field(ge=0)
    desired: Literal["running", "paused", "stopped", "halted"]
    actual: Literal["stopped", "starting", "running", "paused", "stopping", "failed", "halted"]
    launcher: Literal["exec", "fork"] | None = None  # how its process started (None: it has none)
    settled: bool = True  # older gateways report only after acting


class GatewayHeartbeatData(Payload):
    gateway_id: str
    host: str
    version: str
    started_at: AwareDatetime
    bots_running: int = Field(ge=0)
    capacity: int = Field(ge=0, description="How many more bots this gateway can take (free ports, memory).")
    bots_by_state: dict[str, int] = Field(
        default_factory=dict,
        description="How many of its bots are in each actual state (every state, zeros included: starting, "
        "running, paused, stopping, stopped, failed, halted).",
    )
    cpu_percent: float | None = Field(
        default=None, ge=0, le=100, description="The host's CPU use since the previous heartbeat, percent of all cores."
    )
    cpu_count: int | None = Field(default=None, ge=1, description="The host's logical CPUs.")
    memory_used_bytes: int | None = Field(
        default=None, ge=0, description="The host's memory in use (total less what is available to new processes)."
    )
    memory_total_bytes: int | None = Field(default=None, ge=0, description="The host's physical memory.")
    memory_percent: float | None = Field(default=None, ge=0, le=100, description="memory_used_bytes of the total.")
    relay: dict[str, Any] | None = Field(
        default=None,
        description="Its market-data relay's numbers: per exchange the IP's weight this minute, the limit, queued, "
        "refused and blocked requests, upstream requests, hits, misses, coalesced; its cache (None: no relay).",
    )
    inventory: list[InventoryEntry] | None = Field(
        default=None,
        max_length=10_000,
        description="Every bot the gateway has (None from a gateway that does not say): the management server "
        "reconciles it with what each bot should be doing.",
    )
    api_url: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^https?://",
        description="Where the management server reaches this gateway's REST API (e.g. to read a bot's trades).",
    )


class McpCallData(Payload):
    """One MCP tool call (or resource read) on a gateway, for the management server's audit log.

    The caller is named by the token's subject and id, never by the token itself; ``arguments``
    are the call's arguments with secret-named keys masked and long values cut.
    """

    gateway_id: str = Field(min_length=1, max_length=64)
    actor_id: uuid.UUID = Field(description="The caller: the user id the token was issued to.")
    role: str = Field(max_length=32, description="The caller's role as the token states it.")
    token_type: Literal["access", "pat"]
    token_id: uuid.UUID = Field(description="The token's id (jti): which login or personal access token.")
    transport: Literal["websocket", "streamable_http"]
    kind: Literal["tool", "resource"]
    name: str = Field(min_length=1, max_length=200, description="The tool's name, or the resource's URI.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    outcome: Literal["success", "failure", "denied"]
    reason: str | None = Field(default=None, max_length=2000, description="Why it failed or was refused.")
    target_type: str | None = Field(default=None, max_length=32)
    target_id: str | None = Field(default=None, max_length=64)
    client_ip: str | None = Field(default=None, max_length=64)
    duration_ms: float = Field(ge=0)
    repeated: int = Field(
        default=0,
        ge=0,
        description="Refusals like this one (same user, tool and reason) since the last row about them, not audited "
        "one by one (the gateway samples refused and malformed calls).",
    )


class CommandAccepted(Envelope):
    kind = "event"
    type: Literal["COMMAND_ACCEPTED"] = "COMMAND_ACCEPTED"
    data: CommandAcceptedData


class CommandRejected(Envelope):
    kind = "event"
    type: Literal["COMMAND_REJECTED"] = "COMMAND_REJECTED"
    data: CommandRejectedData


class BotStarted(Envelope):
    kind = "event"
    type: Literal["BOT_STARTED"] = "BOT_STARTED"
    data: BotStartedData


class BotStopped(Envelope):
    kind = "event"
    type: Literal["BOT_STOPPED"] = "BOT_STOPPED"
    data: BotStoppedData


class BotFailed(Envelope):
    kind = "event"
    type: Literal["BOT_FAILED"] = "BOT_FAILED"
    data: BotFailedData


class BotStatus(Envelope):
    kind = "event"
    type: Literal["BOT_STATUS"] = "BOT_STATUS"
    data: BotStatusData


class TradeOpened(Envelope):
    kind = "event"
    type: Literal["TRADE_OPENED"] = "TRADE_OPENED"
    data: TradeOpenedData


class TradeClosed(Envelope):
    kind = "event"
    type: Literal["TRADE_CLOSED"] = "TRADE_CLOSED"
    data: TradeClosedData


class ModelLoaded(Envelope):
    kind = "event"
    type: Literal["MODEL_LOADED"] = "MODEL_LOADED"
    data: ModelLoadedData


class ModelRejected(Envelope):
    kind = "event"
    type: Literal["MODEL_REJECTED"] = "MODEL_REJECTED"
    data: ModelRejectedData


class EmergencyStopCompleted(Envelope):
    kind = "event"
    type: Literal["EMERGENCY_STOP_COMPLETED"] = "EMERGENCY_STOP_COMPLETED"
    data: EmergencyStopCompletedData


class GatewayHeartbeat(Envelope):
    kind = "event"
    type: Literal["GATEWAY_HEARTBEAT"] = "GATEWAY_HEARTBEAT"
    data: GatewayHeartbeatData


class McpCall(Envelope):
    kind = "event"
    type: Literal["MCP_CALL"] = "MCP_CALL"
    data: McpCallData
