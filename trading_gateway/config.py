"""Settings of the trading gateway."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings


def default_gateway_id() -> str:
    return f"gw-{socket.gethostname()}"


class GatewaySettings(CommonSettings):
    gateway_id: str = Field(
        default_factory=default_gateway_id,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="This gateway's name on the bus (commands arrive on freqfleet:commands:{gateway_id}).",
    )
    gateway_host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    gateway_port: int = Field(default=8001, ge=1, le=65535, description="Port of the gateway.")
    heartbeat_interval: float = Field(default=5.0, gt=0, description="Seconds between heartbeats on the bus.")
    event_receipt_within: float = Field(
        default=15.0,
        gt=0,
        description="Seconds an event waits for the management server's receipt before the gateway looks for it on "
        "the stream, and publishes it again (same id) if Redis lost it (twice as long the next time, at most 5 "
        "minutes apart, until FREQFLEET_EVENTS_MAX_AGE).",
    )
    lease_seconds: float = Field(
        default=0.0,
        ge=0,
        description="How long this gateway's hold on each of its bots lasts unless renewed (renewed every fifth of "
        "it, in Redis): a bot the management server has placed elsewhere is stopped here and never started again, "
        "and a gateway that can't renew stops its bots before their leases end (docs/design.md, 'Leases'); 0: no "
        "leases (a bot lives and dies with its gateway).",
    )
    max_bots: int = Field(default=20, ge=0, description="How many bots this gateway runs at most.")
    management_url: str = Field(
        default="http://127.0.0.1:8000", description="Where the gateway reaches the management server."
    )
    # bots
    bot_port_range_start: int = Field(
        default=18100, ge=1024, le=65535, description="First port of the range the gateway gives its bots' REST APIs."
    )
    bot_port_range_end: int = Field(
        default=18299, ge=1024, le=65535, description="Last port (included) of the range for the bots' REST APIs."
    )
    simulator_url: str = Field(
        default="http://127.0.0.1:8002", description="Where bots on the exchange simulator reach it."
    )
    bot_start_timeout: float = Field(
        default=90, gt=0, description="Seconds a new bot has to answer on its REST API before it counts as failed."
    )
    bot_launcher: Literal["fork", "exec"] = Field(
        default="fork",
        description=(
            "How bots start: forked by the gateway's launcher, which has imported Freqtrade once (about a second to "
            "ready, their imports' memory shared), or each exec'd as its own `freqtrade trade` (about 3 s, its "
            "own copy; for debugging, and the fallback when the launcher can't)."
        ),
    )
    # market-data relay (trading_gateway/relay)
    relay: bool = Field(
        default=True,
        description="Bots on an exchange the relay knows (the simulator: Binance's API) get their market data through "
        "the gateway's relay: cached, coalesced, inside one request-weight budget for the host's IP. Off: every bot "
        "asks the exchange directly.",
    )
    relay_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The relay's port on 127.0.0.1; 0: one is chosen at the first start and kept in the data folder "
        "(bots' configs name it).",
    )
    relay_cache_mb: int = Field(default=64, ge=1, description="Memory for answers the relay keeps (LRU), in MiB.")
    relay_weight_share: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of the exchange's request-weight limit the relay spends (the rest is headroom for "
        "anything else on this IP).",
    )
    relay_max_wait: float = Field(
        default=5.0,
        ge=0,
        description="Longest a bot's request waits for the budget before the relay answers it 429 itself.",
    )
    bot_stop_grace: float = Field(
        default=15, gt=0, description="Seconds a stopping bot gets after SIGTERM before it is killed."
    )
    status_interval: float = Field(default=5.0, gt=0, description="Seconds between reads of each bot's status.")
    bot_process_throttle_secs: int = Field(
        default=5, ge=1, description="Seconds between two rounds of a bot's trading loop (Freqtrade's throttle)."
    )
    bot_restart_backoff_initial: float = Field(
        default=1.0, gt=0, description="Seconds before a crashed bot's first restart (doubled per crash, jittered)."
    )
    bot_restart_backoff_max: float = Field(default=60.0, gt=0, description="Longest wait before restarting a bot.")
    bot_restart_backoff_reset: float = Field(
        default=60.0, gt=0, description="Seconds of good health after which a bot's restart backoff starts over."
    )
    bot_crash_loop_max: int = Field(
        default=5, ge=0, description="More crashes than this within the crash-loop window mark a bot failed."
    )
    bot_crash_loop_window: float = Field(default=600.0, gt=0, description="Seconds of the crash-loop window.")
    bot_unresponsive_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a running bot's API may stay silent before the bot is restarted."
    )
    bot_stall_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a running bot's trading loop may go without a round (Freqtrade's /health) before "
        "the bot is restarted.",
    )
    stop_bots_on_shutdown: bool = Field(
        default=False,
        description="Stop the bots when the gateway shuts down. `freqfleet up` sets it true so the embedded default "
        "stops its bots; a gateway that dies or is upgraded leaves its bots trading for the next gateway to adopt.",
    )
    jwt_issuer: str = Field(default="freqfleet", description="`iss` the management server's tokens must carry.")
    jwt_audience: str = Field(default="freqfleet", description="`aud` the management server's tokens must carry.")
    # FreqAI models (trading_gateway/freqai)
    model_keys_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where the management server publishes its model-signing public keys (JWKS form); default "
        "<management_url>/.well-known/model-keys.json.",
    )
    command_keys_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where the management server publishes its command-signing public keys (JWKS form); default "
        "<management_url>/.well-known/command-keys.json.",
    )
    model_max_bundle_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Largest model bundle accepted, uncompressed (bytes)."
    )
    model_max_compressed_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="Largest model bundle accepted as it travels, compressed (bytes)."
    )
    model_load_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a running bot is watched closely for taking a new model into use (after that, every "
        "status poll checks).",
    )
    model_history: int = Field(
        default=5, ge=2, description="Model versions kept per bot in the gateway's store (what rollbacks can reach)."
    )
    freqai_start_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Seconds a FreqAI bot's first round of its trading loop may take (it loads models and predicts "
        "every pair) before it counts as stalled; after the first round bot_stall_timeout applies.",
    )
    # MCP for AI agents (trading_gateway/mcp)
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to open MCP connections (`/mcp`, `/mcp/ws`), as a JSON list or "
        "comma-separated. A request without an Origin header (a non-browser client) is always allowed; one with "
        "an Origin not in this list is refused.",
    )
    mcp_management_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an MCP tool waits for the management server (an emergency stop waits there for the "
        "gateways' reports).",
    )
    mcp_list_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long a caller's bot list from the management server is reused by MCP tools (list_bots, the "
        "fleet summary); 0: asked on every call. A change the caller makes through this gateway refreshes it.",
    )

    mcp_max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest MCP message (a WebSocket frame, a Streamable HTTP body): a larger one is refused before "
        "it is parsed.",
    )
    mcp_calls_per_minute: int = Field(
        default=300, ge=1, description="MCP tool calls and resource reads one user may make per minute (all agents)."
    )
    mcp_in_flight_per_connection: int = Field(
        default=16, ge=1, description="MCP requests one WebSocket connection may have unanswered at once."
    )
    mcp_connections_per_user: int = Field(
        default=8, ge=1, description="MCP WebSocket connections one user may have open at once."
    )
    mcp_sessions_per_user: int = Field(
        default=16, ge=1, description="Streamable HTTP sessions one user may have open at once."
    )
    mcp_max_sessions: int = Field(default=1000, ge=1, description="Streamable HTTP sessions open at once in all.")
    mcp_session_idle: float = Field(
        default=300.0, gt=0, description="Seconds an idle Streamable HTTP session lives (then a client opens another)."
    )
    mcp_refusal_sample_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Refused and malformed MCP calls are audited as one row per user, tool and reason per this many "
        "seconds, with a count (successful calls: one row each).",
    )

    @field_validator("mcp_allowed_origins", mode="before")
    @classmethod
    def _split_mcp_origins(cls, value: object) -> object:
        return cls._split_origins(value)

    # analytics: where the management server reaches this gateway (in the heartbeat)
    gateway_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The URL of this gateway's REST API as the management server reaches it (it reads bots' trades "
        "there when an event was missed); default http://<gateway host>:<gateway port> (this host's name when "
        "it listens on every address).",
    )

    @property
    def api_url(self) -> str:
        if self.gateway_public_url:
            return self.gateway_public_url.rstrip("/")
        host = socket.gethostname() if self.gateway_host in ("0.0.0.0", "::", "") else self.gateway_host
        return f"http://{host}:{self.gateway_port}"

    @property
    def gateway_data_dir(self) -> Path:
        """The gateway's own folder (one sub-folder per bot, its state file)."""
        return self.data_dir / "gateway" / self.gateway_id


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
