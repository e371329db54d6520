"""The messages on the bus: one envelope, a discriminated union of typed payloads.

Every stream entry carries one envelope::

    {"event_id": UUID, "type": "START_BOT", "schema_version": 1, "occurred_at": "...Z",
     "correlation_id": "...", "source": "management", "data": {...}}

``type`` selects the payload model. Models forbid unknown fields, so a producer that
drifts from the schema is caught at the consumer (and its message dead-lettered)
rather than half-applied. Commands about a bot carry the bot's ``generation``: the
management server bumps it on every change of desired state, and a gateway ignores a
command whose generation is older than one it has already applied.

The JSON Schemas of these models are exported to ``docs/events/`` for integrations
that read the streams (``python -m shared.bus.schema_export``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
    model_validator,
)

SCHEMA_VERSION = 1

BotId = uuid.UUID
Generation = Annotated[int, Field(ge=0, description="The bot's generation when the command was issued.")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PairName = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$", examples=["BTC/USDT"])]
Timeframe = Annotated[str, Field(pattern=r"^[0-9]{1,3}[smhdwM]$", examples=["5m"])]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields every message has; subclasses fix ``type`` and ``data``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[Literal["command", "event"]]
    supported_versions: ClassVar[frozenset[int]] = frozenset({SCHEMA_VERSION})

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; the idempotency key.")
    type: str
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=_now)
    correlation_id: str | None = Field(default=None, max_length=128)
    source: str = Field(min_length=1, max_length=128, description="Who published it: management, gateway:<id>.")
    data: Payload

    @model_validator(mode="after")
    def _known_version(self) -> Envelope:
        if self.schema_version not in self.supported_versions:
            raise ValueError(
                f"schema_version {self.schema_version} of {self.type} is not supported "
                f"(supported: {sorted(self.supported_versions)})"
            )
        return self


# --------------------------------------------------------------------------- commands


class ExchangeCredentials(Payload):
    """Keys of a live bot: the plaintext of :class:`SealedCredentials` (never on the bus in the clear; never logged)."""

    key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None

    @field_serializer("key", "secret", "password", when_used="json")
    def _reveal_on_the_wire(self, value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()


class SealedCredentials(Payload):
    """A live bot's exchange credentials sealed to the one gateway that runs it (:mod:`shared.sealing`).

    Only that gateway's private sealing key opens them, and only for this bot (the gateway id, the bot id and the
    credential's revision are the associated data). Two sealings of one revision are equal (the ciphertexts differ:
    a fresh ephemeral key each time), so a spec sent again with the same credentials is not a change.
    """

    gateway_id: str = Field(min_length=1, max_length=64)
    bot_id: uuid.UUID
    revision: str = Field(min_length=1, max_length=128, description="The stored credential's id and version.")
    ephemeral: str = Field(min_length=1, max_length=64)
    nonce: str = Field(min_length=1, max_length=32)
    ciphertext: str = Field(min_length=1, max_length=8192)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SealedCredentials):
            return NotImplemented
        return (self.gateway_id, self.bot_id, self.revision) == (other.gateway_id, other.bot_id, other.revision)

    def __hash__(self) -> int:
        return hash((self.gateway_id, self.bot_id, self.revision))


class SealedDatabase(SealedCredentials):
    """A bot's trade database (its URL with the password of its own role) sealed to the one gateway that runs it,
    like :class:`SealedCredentials`; its ``revision`` changes with every new password (a failover gives one)."""


class BotSpec(Payload):
    """Everything a gateway needs to render a bot's Freqtrade config."""

    name: str = Field(min_length=1, max_length=100)
    strategy_class: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    strategy_source: str = Field(min_length=1, max_length=512_000)
    strategy_trusted: bool = Field(
        default=False,
        description="The strategy was uploaded by an admin: it may run on a host without a sandbox.",
    )
    exchange: str = Field(default="simulator", min_length=1, max_length=50)
    pairs: list[PairName] = Field(min_length=1, max_length=200)
    timeframe: Timeframe
    stake_currency: str = Field(pattern=r"^[A-Z0-9]{1,20}$")
    stake_amount: Decimal | Literal["unlimited"]
    max_open_trades: int = Field(ge=-1, le=1000)
    dry_run: bool = True
    dry_run_wallet: Decimal | None = Field(default=None, gt=0)
    stoploss: float | None = Field(default=None, lt=0, ge=-1)
    freqai: dict[str, Any] | None = None
    credentials: SealedCredentials | None = None
    database: SealedDatabase | None = Field(
        default=None,
        description="The bot's trades in a PostgreSQL database of its own (FREQFLEET_BOT_DB=postgres); none: SQLite "
        "in the bot's folder on its gateway.",
    )

    @model_validator(mode="after")
    def _live_needs_credentials(self) -> BotSpec:
        if not self.dry_run and self.credentials is None:
            raise ValueError("a live bot (dry_run false) needs exchange credentials")
        return self


class ModelBundle(Payload):
    """A FreqAI model bundle: compressed, then Base64, signed by the management server.

    Small bundles travel inline (``content_b64``); large ones in ``chunk_count`` chunks
    stored under the transfer id, so no single stream entry is large.
    """

    model_id: uuid.UUID
    version: int = Field(ge=1)
    filename: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    compression: Literal["zstd", "none"] = "zstd"
    sha256: Sha256Hex = Field(description="sha256 of the uncompressed bundle.")
    size: int = Field(ge=0, description="Bytes of the uncompressed bundle.")
    signature: str = Field(min_length=1, max_length=1024, description="Ed25519 signature, Base64.")
    content_b64: str | None = None
    transfer_id: uuid.UUID | None = None
    chunk_count: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _inline_xor_chunked(self) -> ModelBundle:
        inline = self.content_b64 is not None
        chunked = self.chunk_count > 0 and self.transfer_id is not None
        if inline == chunked:
            raise ValueError("a model bundle is either inline (content_b64) or chunked (transfer_id, chunk_count)")
        return self


class BotCommand(Payload):
    bot_id: BotId
    generation: Generation


class StartBotData(BotCommand):
    spec: BotSpec
    freqai_model: ModelBundle | None = None


class StopBotData(BotCommand):
    reason: str | None = Field(default=None, max_length=500)


class RestartBotData(BotCommand):
    pass


class PauseBotData(BotCommand):
    pass


class ResumeBotData(BotCommand):
    pass


class ForceExitData(BotCommand):
    trade_id: int | Literal["all"] = Field(description="A trade id of the bot, or all open trades.")


class UpdateConfigData(BotCommand):
    spec: BotSpec


class UpdateModelData(BotCommand):
    model: ModelBundle


class RollbackModelData(BotCommand):
    model_id: uuid.UUID | None = Field(default=None, description="The version to go back to; the previous if None.")


class MigrateTradeDbData(BotCommand):
    """Copy the stopped bot's trades from the SQLite file in its folder into ``database`` (then checked row by row)."""

    database: SealedDatabase


class BotRef(Payload):
    bot_id: BotId
    generation: Generation


class EmergencyScope(StrEnum):
    bots = "bots"
    user = "user"
    all = "all"


class EmergencyStopData(Payload):
    scope: EmergencyScope
    bots: list[BotRef] = Field(default_factory=list)
    user_id: uuid.UUID | None = None
    requested_by: str = Field(min_length=1, max_length=320)
    reason: str | None = Field(default=None, max_length=500)


class StartBot(Envelope):
    kind = "command"
    type: Literal["START_BOT"] = "START_BOT"
    data: StartBotData


class StopBot(Envelope):
    kind = "command"
    type: Literal["STOP_BOT"] = "STOP_BOT"
    data: StopBotData


class RestartBot(Envelope):
    kind = "command"
    type: Literal["RESTART_BOT"] = "RESTART_BOT"
    data: RestartBotData


class PauseBot(Envelope):
    kind = "command"
    type: Literal["PAUSE_BOT"] = "PAUSE_BOT"
    data: PauseBotData


class ResumeBot(Envelope):
    kind = "command"
    type: Literal["RESUME_BOT"] = "RESUME_BOT"
    data: ResumeBotData


class ForceExit(Envelope):
    kind = "command"
    type: Literal["FORCE_EXIT"] = "FORCE_EXIT"
    data: ForceExitData


class UpdateConfig(Envelope):
    kind = "command"
    type: Literal["UPDATE_CONFIG"] = "UPDATE_CONFIG"
    data: UpdateConfigData


class UpdateModel(Envelope):
    kind = "command"
    type: Literal["UPDATE_MODEL"] = "UPDATE_MODEL"
    data: UpdateModelData


class RollbackModel(Envelope):
    kind = "command"
    type: Literal["ROLLBACK_MODEL"] = "ROLLBACK_MODEL"
    data: RollbackModelData


class MigrateTradeDb(Envelope):
    kind = "command"
    type: Literal["MIGRATE_TRADE_DB"] = "MIGRATE_TRADE_DB"
    data: MigrateTradeDbData


class EmergencyStop(Envelope):
    kind = "command"
    type: Literal["EMERGENCY_STOP"] = "EMERGENCY_STOP"
    data: EmergencyStopData


# --------------------------------------------------------------------------- events


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


COMMAND_TYPES: tuple[type[Envelope], ...] = (
    StartBot,
    StopBot,
    RestartBot,
    PauseBot,
    ResumeBot,
    ForceExit,
    UpdateConfig,
    UpdateModel,
    RollbackModel,
    MigrateTradeDb,
    EmergencyStop,
)
EVENT_TYPES: tuple[type[Envelope], ...] = (
    CommandAccepted,
    CommandRejected,
    BotStarted,
    BotStopped,
    BotFailed,
    BotStatus,
    TradeOpened,
    TradeClosed,
    ModelLoaded,
    ModelRejected,
    EmergencyStopCompleted,
    GatewayHeartbeat,
    McpCall,
)
MESSAGE_TYPES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls for cls in (*COMMAND_TYPES, *EVENT_TYPES)
}

Command = Annotated[
    StartBot
    | StopBot
    | RestartBot
    | PauseBot
    | ResumeBot
    | ForceExit
    | UpdateConfig
    | UpdateModel
    | RollbackModel
    | MigrateTradeDb
    | EmergencyStop,
    Field(discriminator="type"),
]
Event = Annotated[
    CommandAccepted
    | CommandRejected
    | BotStarted
    | BotStopped
    | BotFailed
    | BotStatus
    | TradeOpened
    | TradeClosed
    | ModelLoaded
    | ModelRejected
    | EmergencyStopCompleted
    | GatewayHeartbeat
    | McpCall,
    Field(discriminator="type"),
]
Message = Annotated[Command | Event, Field(discriminator="type")]

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class UndecodableMessage(ValueError):
    """A stream entry that is not a message we can handle; the reason says why."""


def decode(raw: str | bytes) -> Envelope:
    """Parse one envelope; raise ``UndecodableMessage`` with a readable reason otherwise."""
    try:
        message: Envelope = MESSAGE_ADAPTER.validate_json(raw)
    except ValidationError:
        raise UndecodableMessage(_why_undecodable(raw)) from None
    return message


def _why_undecodable(raw: str | bytes) -> str:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    type_ = obj.get("type")
    if type_ not in MESSAGE_TYPES:
        return f"unknown message type {type_!r}"
    version = obj.get("schema_version")
    if isinstance(version, int) and version not in MESSAGE_TYPES[type_].supported_versions:
        return f"unsupported schema_version {version} for {type_}"
    try:
        MESSAGE_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        return f"invalid {type_}: {problems}"
    return "invalid message"


def encode(message: Envelope) -> str:
    return message.model_dump_json()
