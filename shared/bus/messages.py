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

Where they live: the envelope and the payload base in ``envelope.py``, the commands in ``command_messages.py``, the
events in ``event_messages.py``; this module is the registry (every type, ``decode``, ``encode``) and the one place
to import them from.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from shared.bus.command_messages import (
    BotCommand,
    BotRef,
    BotSpec,
    EmergencyScope,
    EmergencyStop,
    EmergencyStopData,
    ExchangeCredentials,
    ForceExit,
    ForceExitData,
    MigrateTradeDb,
    MigrateTradeDbData,
    ModelBundle,
    PauseBot,
    PauseBotData,
    RestartBot,
    RestartBotData,
    ResumeBot,
    ResumeBotData,
    RollbackModel,
    RollbackModelData,
    SealedCredentials,
    SealedDatabase,
    StartBot,
    StartBotData,
    StopBot,
    StopBotData,
    UpdateConfig,
    UpdateConfigData,
    UpdateModel,
    UpdateModelData,
)
from shared.bus.envelope import SCHEMA_VERSION, BotId, Envelope, Generation, PairName, Payload, Sha256Hex, Timeframe
from shared.bus.event_messages import (
    BotFailed,
    BotFailedData,
    BotStarted,
    BotStartedData,
    BotStatus,
    BotStatusData,
    BotStopped,
    BotStoppedData,
    CommandAccepted,
    CommandAcceptedData,
    CommandRejected,
    CommandRejectedData,
    EmergencyOutcome,
    EmergencyStopCompleted,
    EmergencyStopCompletedData,
    GatewayHeartbeat,
    GatewayHeartbeatData,
    InventoryEntry,
    McpCall,
    McpCallData,
    ModelLoaded,
    ModelLoadedData,
    ModelRejected,
    ModelRejectedData,
    TradeClosed,
    TradeClosedData,
    TradeOpened,
    TradeOpenedData,
)

__all__ = [
    "COMMAND_TYPES",
    "EVENT_TYPES",
    "MESSAGE_ADAPTER",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "BotCommand",
    "BotFailed",
    "BotFailedData",
    "BotId",
    "BotRef",
    "BotSpec",
    "BotStarted",
    "BotStartedData",
    "BotStatus",
    "BotStatusData",
    "BotStopped",
    "BotStoppedData",
    "Command",
    "CommandAccepted",
    "CommandAcceptedData",
    "CommandRejected",
    "CommandRejectedData",
    "EmergencyOutcome",
    "EmergencyScope",
    "EmergencyStop",
    "EmergencyStopCompleted",
    "EmergencyStopCompletedData",
    "EmergencyStopData",
    "Envelope",
    "Event",
    "ExchangeCredentials",
    "ForceExit",
    "ForceExitData",
    "GatewayHeartbeat",
    "GatewayHeartbeatData",
    "Generation",
    "InventoryEntry",
    "McpCall",
    "McpCallData",
    "Message",
    "MigrateTradeDb",
    "MigrateTradeDbData",
    "ModelBundle",
    "ModelLoaded",
    "ModelLoadedData",
    "ModelRejected",
    "ModelRejectedData",
    "PairName",
    "PauseBot",
    "PauseBotData",
    "Payload",
    "RestartBot",
    "RestartBotData",
    "ResumeBot",
    "ResumeBotData",
    "RollbackModel",
    "RollbackModelData",
    "SealedCredentials",
    "SealedDatabase",
    "Sha256Hex",
    "StartBot",
    "StartBotData",
    "StopBot",
    "StopBotData",
    "Timeframe",
    "TradeClosed",
    "TradeClosedData",
    "TradeOpened",
    "TradeOpenedData",
    "UndecodableMessage",
    "UpdateConfig",
    "UpdateConfigData",
    "UpdateModel",
    "UpdateModelData",
    "decode",
    "encode",
]


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
