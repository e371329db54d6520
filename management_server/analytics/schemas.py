"""Shapes of the analytics answers (every figure is defined in ``metrics.py``, as Freqtrade defines it)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class PairResult(BaseModel):
    pair: str
    profit_abs: float
    profit_ratio: float = Field(description="The pair's profit over what was staked on it.")
    trade_count: int


class DailyResult(BaseModel):
    date: str = Field(description="UTC day of closing, YYYY-MM-DD.")
    profit_abs: float
    trade_count: int
    starting_balance: float | None = Field(description="Balance at the start of the day (starting balance + profit).")
    profit_ratio: float | None


class EquityPoint(BaseModel):
    date: str = Field(description="When a trade closed (ISO 8601, UTC).")
    profit_abs: float = Field(description="Cumulative profit of the closed trades up to here.")
    balance: float | None = Field(description="Starting balance plus that profit.")


class Metrics(BaseModel):
    trade_count: int = Field(description="Open and closed trades (as Freqtrade's /profit counts them).")
    closed_trade_count: int
    open_trade_count: int
    winning_trades: int = Field(description="Closed trades with a profit ratio of 0 or more (Freqtrade's rule).")
    losing_trades: int
    win_rate: float = Field(description="winning_trades / closed_trade_count, 0 to 1.")
    starting_balance: float | None = Field(
        description="What ratios are measured against: the bots' dry-run wallets times 0.99, or a live bot's "
        "balance read back from its own /profit; null when unknown."
    )
    profit_abs: float = Field(description="Profit of the closed trades, in the stake currency.")
    profit_ratio: float | None = Field(description="profit_abs / starting_balance.")
    profit_ratio_mean: float
    profit_ratio_sum: float
    winning_profit_abs: float
    losing_profit_abs: float
    profit_factor: float | None = Field(description="Gross profit / gross loss; null without a losing trade.")
    expectancy: float
    expectancy_ratio: float
    max_drawdown_abs: float
    max_drawdown_ratio: float | None
    max_drawdown_start: str | None = Field(description="Close date of the trade at the high before the drawdown.")
    max_drawdown_end: str | None = Field(description="Close date of the trade at the low of the drawdown.")
    drawdown_high: float
    drawdown_low: float
    current_drawdown_abs: float
    current_drawdown_ratio: float | None
    current_drawdown_start: str | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    sqn: float | None
    avg_duration_seconds: float
    avg_duration: str = Field(description="Average duration of the closed trades, H:MM:SS as Freqtrade shows it.")
    best_pair: PairResult | None
    worst_pair: PairResult | None
    first_trade_date: str | None
    latest_trade_date: str | None
    daily: list[DailyResult] = Field(description="P&L per UTC day with closed trades (the latest 366 such days).")
    equity_curve: list[EquityPoint] = Field(description="Cumulative profit per closed trade (at most 500 points).")


class BotAnalyticsOut(Metrics):
    scope: str = Field(description="'bot'.")
    bot_id: uuid.UUID
    name: str
    owner_id: uuid.UUID
    stake_currency: str
    generated_at: datetime


class BotSummary(BaseModel):
    bot_id: uuid.UUID
    name: str
    owner_id: uuid.UUID
    actual_state: str
    trade_count: int
    closed_trade_count: int
    win_rate: float
    profit_abs: float
    profit_ratio: float | None
    max_drawdown_abs: float
    max_drawdown_ratio: float | None


class UserSummary(BaseModel):
    user_id: uuid.UUID
    email: str
    bot_count: int
    trade_count: int
    closed_trade_count: int
    win_rate: float
    profit_abs: float
    profit_ratio: float | None
    max_drawdown_abs: float
    max_drawdown_ratio: float | None


class FleetAnalyticsOut(Metrics):
    scope: str = Field(description="'fleet' (every bot: admins) or 'user' (one user's bots).")
    user_id: uuid.UUID | None = Field(description="The user whose bots these are (scope 'user').")
    stake_currency: str | None = Field(description="The figures are of the bots trading in this currency.")
    other_stake_currencies: list[str] = Field(
        description="Stake currencies of bots left out (ask again with ?stake_currency=)."
    )
    bot_count: int
    bots: list[BotSummary]
    users: list[UserSummary] | None = Field(description="Per user (scope 'fleet' only).")
    generated_at: datetime
