"""The gateway's process layer for Freqtrade bots.

- :mod:`.client`: ``FreqtradeClient``, one bot's REST API (``BotApiError``).
- :mod:`.ports`: ``PortPool`` of loopback ports for the bots' APIs (``NoFreePort``).
- :mod:`.files`: ``BotFiles`` (a bot's folder), ``render_config`` from a ``BotSpec`` (``BotConfigError``).
- :mod:`.process`: ``BotProcess``: spawn, readiness and identity, liveness, stop (``BotStartError``).
- :mod:`.launch`: ``launch_bot``, all of the above for one START_BOT.
- :mod:`.state`: ``StateFile`` of ``BotRecord`` s, for re-adoption.
- :mod:`.adoption`: ``adopt``: a (re)started gateway takes over the bots that still run.
- :mod:`.emergency`: ``emergency_stop_bot`` / ``emergency_stop_all``.

Paths under the gateway's data folder (``GatewaySettings.gateway_data_dir``): bots in
:data:`BOTS_DIR`, the state file :data:`STATE_FILE`.
"""

from __future__ import annotations

from trading_gateway.bots.adoption import AdoptedBot, AdoptionReport, DeadBot, Orphan, UnresponsiveBot, adopt
from trading_gateway.bots.client import (
    BotApiError,
    BotAuthRefused,
    BotHealth,
    BotSnapshot,
    BotUnreachable,
    FreqtradeClient,
    ShowConfig,
)
from trading_gateway.bots.credentials import ApiCredentials
from trading_gateway.bots.emergency import (
    EmergencyResult,
    FleetEmergencyResult,
    emergency_stop_all,
    emergency_stop_bot,
)
from trading_gateway.bots.files import BotConfig, BotConfigError, BotFiles, render_config, validate_spec
from trading_gateway.bots.launch import LaunchedBot, launch_bot
from trading_gateway.bots.ports import NoFreePort, PortPool
from trading_gateway.bots.process import (
    BotExitedEarly,
    BotPortConflict,
    BotProcess,
    BotStartError,
    BotStartTimeout,
    ReadyInfo,
    StopResult,
)
from trading_gateway.bots.state import BotRecord, Desired, StateFile

BOTS_DIR = "bots"
STATE_FILE = "bots-state.json"

__all__ = [
    "BOTS_DIR",
    "STATE_FILE",
    "AdoptedBot",
    "AdoptionReport",
    "ApiCredentials",
    "BotApiError",
    "BotAuthRefused",
    "BotConfig",
    "BotConfigError",
    "BotExitedEarly",
    "BotFiles",
    "BotHealth",
    "BotPortConflict",
    "BotProcess",
    "BotRecord",
    "BotSnapshot",
    "BotStartError",
    "BotStartTimeout",
    "BotUnreachable",
    "DeadBot",
    "Desired",
    "EmergencyResult",
    "FleetEmergencyResult",
    "FreqtradeClient",
    "LaunchedBot",
    "NoFreePort",
    "Orphan",
    "PortPool",
    "ReadyInfo",
    "ShowConfig",
    "StateFile",
    "StopResult",
    "UnresponsiveBot",
    "adopt",
    "emergency_stop_all",
    "emergency_stop_bot",
    "launch_bot",
    "render_config",
    "validate_spec",
]
