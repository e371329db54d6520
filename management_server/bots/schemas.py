from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from shared.bus.messages import PairName, Timeframe
from shared.freqai.parameters import BotParameters, checked_section

FREQTRADE_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
MAX_STAKE = Decimal("1e12")
NAME = re.compile(r"^[\w .-]+$")


class BotFields(BaseModel):
    """The rules every way of setting a bot's fields follows (create and PATCH alike): same checks, same words."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("name", check_fields=False)
    @classmethod
    def _readable_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not NAME.match(value):
            raise ValueError("a name may hold letters, digits, spaces, '.', '_' and '-' only")
        if not value.strip(" .-_"):
            raise ValueError("a name needs a letter or a digit")
        return value.strip()

    @field_validator("stake_amount", check_fields=False)
    @classmethod
    def _stake_in_range(cls, value: Decimal | str | None) -> Decimal | str | None:
        if isinstance(value, Decimal):
            if not value.is_finite() or value <= 0:
                raise ValueError("stake_amount must be above 0, or 'unlimited'")
            if value > MAX_STAKE:
                raise ValueError("stake_amount must be at most 1,000,000,000,000 (1e12)")
        return value

    @field_validator("timeframe", check_fields=False)
    @classmethod
    def _known_timeframe(cls, value: str | None) -> str | None:
        if value is not None and value not in FREQTRADE_TIMEFRAMES:
            raise ValueError(f"unknown timeframe: use one of {', '.join(FREQTRADE_TIMEFRAMES)}")
        return value

    @field_validator("pairs", check_fields=False)
    @classmethod
    def _distinct_pairs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a pair is listed twice")
        return value


class Placement(BaseModel):
    """Where a bot runs when it is not wherever there is room."""

    model_config = ConfigDict(extra="forbid")
    gateway_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The enrolled gateway it is pinned to: it starts there only, and neither failover nor a drain "
        "moves it (a pinned bot whose gateway's lease on it ends reads `orphaned`).",
    )


PLACEMENT = (
    "Pin the bot to one gateway (admins only): it starts there only and is never moved by failover or a drain. "
    "Null: it runs on the live gateway with the most room, and moves when its gateway is lost or drained."
)


class BotCreate(BotFields):
    name: str = Field(min_length=1, max_length=100)
    strategy_id: uuid.UUID
    exchange: str = Field(default="simulator", pattern=r"^[a-z][a-z0-9_]{1,40}$")
    pairs: list[PairName] = Field(min_length=1, max_length=200)
    timeframe: Timeframe = "5m"
    stake_currency: str = Field(default="USDT", pattern=r"^[A-Z0-9]{1,20}$")
    stake_amount: Decimal | Literal["unlimited"] = Field(default=Decimal("10"))
    max_open_trades: int = Field(default=3, ge=-1, le=1000)
    dry_run: bool = True
    dry_run_wallet: Decimal | None = Field(default=None, gt=0, le=Decimal("1e12"))
    stoploss: float | None = Field(default=None, lt=0, ge=-1)
    credentials_id: uuid.UUID | None = None
    freqai: dict[str, Any] | None = None
    model_id: uuid.UUID | None = None
    max_drawdown_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Pause the bot when its drawdown reaches this share of its balance (default: the server's "
        "FREQFLEET_RISK_MAX_DRAWDOWN_BOT).",
    )
    placement: Placement | None = Field(default=None, description=PLACEMENT)

    @field_validator("freqai")
    @classmethod
    def _freqai_parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else checked_section(BotParameters, value)


class BotUpdate(BotFields):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    pairs: list[PairName] | None = Field(default=None, min_length=1, max_length=200)
    timeframe: Timeframe | None = None
    stake_amount: Decimal | Literal["unlimited"] | None = None
    max_open_trades: int | None = Field(default=None, ge=-1, le=1000)
    stoploss: float | None = Field(default=None, lt=0, ge=-1)
    max_drawdown_ratio: float | None = Field(
        default=None, gt=0, le=1, description="The bot's drawdown limit; null: the server's default. Changes live."
    )
    placement: Placement | None = Field(default=None, description=PLACEMENT + " Takes effect at its next start.")


# 0.00000001 in JSON, not 1E-8 (what ``str`` of that Decimal says)
PlainDecimal = Annotated[Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json")]


class BotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    strategy_id: uuid.UUID
    exchange: str
    pairs: list[str]
    timeframe: str
    stake_currency: str
    stake_amount: PlainDecimal | Literal["unlimited"]
    max_open_trades: int
    dry_run: bool
    dry_run_wallet: PlainDecimal | None
    stoploss: float | None
    credentials_id: uuid.UUID | None
    freqai: dict[str, Any] | None
    model_id: uuid.UUID | None
    model_state: str | None = Field(
        default=None, description="FreqAI: state of the latest model deployment (pending, loaded, rejected)."
    )
    model_loaded_id: uuid.UUID | None = Field(default=None, description="FreqAI: the model the bot predicts with.")
    desired_state: str
    actual_state: str
    generation: int
    gateway_id: str | None
    placement: Placement | None = Field(default=None, description="The gateway it is pinned to; null: not pinned.")
    launcher: str | None = Field(
        default=None,
        description="How its process last started on its gateway: `fork` (from the gateway's launcher) or `exec`.",
    )
    trade_db: Literal["sqlite", "postgres", "migrating"] = Field(
        default="sqlite",
        description="Where its trades live: `sqlite`, a file in its folder on its gateway, or `postgres`, a database "
        "of its own that every gateway reaches (FREQFLEET_BOT_DB); `migrating` while `migrate-db` copies them.",
    )
    last_error: str | None
    max_drawdown_ratio: float | None = Field(default=None, description="The bot's own drawdown limit (null: default).")
    risk_reason: str | None = Field(default=None, description="Why the risk guard paused it (until it trades again).")
    risk_paused_at: datetime | None = Field(default=None, description="When the risk guard last paused it.")
    created_at: datetime
    updated_at: datetime

    @field_validator("stake_amount", mode="before")
    @classmethod
    def _unlimited(cls, value: object) -> object:
        return "unlimited" if value is None else value

    @field_validator("stake_amount", "dry_run_wallet")
    @classmethod
    def _as_written(cls, value: Decimal | str | None) -> Decimal | str | None:
        """10, not 10.00000000: the same figure whether it comes from the request or the database."""
        if isinstance(value, Decimal) and value.is_finite():
            return Decimal(format(value.normalize(), "f"))
        return value


class BotLogOut(BaseModel):
    bot_id: uuid.UUID
    gateway_id: str = Field(description="The gateway the lines were read on.")
    source: str = Field(description="Where: the bot's API while it runs, else its log file.")
    lines: list[str] = Field(description="The last lines, oldest first, with the bot's secrets taken out.")


class BotActionOut(BotOut):
    command_id: uuid.UUID = Field(description="event_id of the command sent to the gateway.")
    notice: str | None = Field(default=None, description="Set when the gateway is not answering right now.")


class TradeDbMigrationOut(BotOut):
    command_id: uuid.UUID | None = Field(
        description="event_id of the MIGRATE_TRADE_DB sent to the bot's gateway; null when the bot never ran, so "
        "there was nothing to copy and its trades are in PostgreSQL at once."
    )
    notice: str | None = Field(default=None, description="Set when the gateway is not answering right now.")


class ForceExitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trade_id: int | Literal["all"] = Field(description="A trade id of the bot, or all of its open trades.")

    @field_validator("trade_id")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 2**31:
            raise ValueError("trade_id must be a trade's id or 'all'")
        return value


class TradeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    trade_id: int
    pair: str
    is_short: bool
    is_open: bool
    open_date: datetime
    close_date: datetime | None
    open_rate: float
    close_rate: float | None
    amount: float
    stake_amount: float
    profit_abs: float | None
    profit_ratio: float | None
    enter_tag: str | None
    exit_reason: str | None


class LiveStatusOut(BaseModel):
    state: str | None = Field(
        description="Freqtrade's state as the bot's running process last reported it; null while no process runs "
        "(stopped, halted, failed, starting) or before its first report; unknown when that report is too old to "
        "say anything of now."
    )
    actual_state: str
    open_trades: list[dict[str, Any]] = Field(description="The running process's open trades; empty while none runs.")
    profit: dict[str, Any]
    updated_at: datetime | None
    age_seconds: float | None


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=1000)
    scope: Literal["mine", "all"] | None = Field(default=None, description="'all' is for admins.")
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _one_target(self) -> EmergencyIn:
        if (self.bot_ids is None) == (self.scope is None):
            raise ValueError("give either bot_ids or scope ('mine' or 'all')")
        return self


class EmergencyOutcomeOut(BaseModel):
    bot_id: uuid.UUID
    outcome: Literal["halted", "failed", "pending"]
    actual_state: str
    detail: str | None


class EmergencyOut(BaseModel):
    completed: bool = Field(description="False when some gateways had not reported within the wait.")
    seconds: float
    command_ids: list[uuid.UUID]
    results: list[EmergencyOutcomeOut]
