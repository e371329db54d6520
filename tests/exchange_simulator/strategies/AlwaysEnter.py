"""A test strategy that wants to be in the market on every candle and never exits by itself.

Exits come from outside: ``forceexit`` through the REST API, or the stoploss when the price falls.
"""

from typing import ClassVar

from freqtrade.strategy import IStrategy
from pandas import DataFrame


class AlwaysEnter(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    minimal_roi: ClassVar[dict[str, float]] = {"0": 100.0}  # never exit on profit
    stoploss = -0.5  # the bot config overrides it
    trailing_stop = False
    process_only_new_candles = False
    startup_candle_count = 0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
