"""The commands the management server sends a gateway (``freqfleet:commands:<gateway id>``): their payloads and
envelopes. Commands about a bot carry the bot's ``generation``: the management server bumps it on every change of
desired state, and a gateway ignores a command whose generation is older than one it has already applied."""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, model_validator

from shared.bus.envelope import BotId, Envelope, Generation, PairName, Payload, Sha256Hex, Timeframe


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
