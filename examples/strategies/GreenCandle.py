"""A small demonstration strategy for the exchange simulator: it is not advice, nor a good idea with money.

It buys after a green candle that closes above its 10-candle average, and sells at +1 %, after
30 minutes at break-even, or at a -5 % stoploss. On 1m candles it trades within minutes, which is
what a demo needs. It trades with market orders: a dry-run limit order fills only once the price
comes back to it, so a demo trade could wait unfilled, and a forced exit would cancel it unseen.
"""

from freqtrade.strategy import IStrategy
from pandas import DataFrame


class GreenCandle(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    minimal_roi = {"0": 0.01, "30": 0.0}  # noqa: RUF012 - Freqtrade reads these class attributes
    stoploss = -0.05
    order_types = {"entry": "market", "exit": "market", "stoploss": "market", "stoploss_on_exchange": False}  # noqa: RUF012
    process_only_new_candles = True
    startup_candle_count = 10

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["sma10"] = dataframe["close"].rolling(10).mean()
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        green = dataframe["close"] > dataframe["open"]
        dataframe.loc[green & (dataframe["close"] > dataframe["sma10"]), "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
