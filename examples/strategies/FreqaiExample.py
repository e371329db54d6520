"""A small FreqAI demonstration strategy for the exchange simulator: it is not advice, nor a good idea with money.

Adapted from Freqtrade's ``templates/FreqaiExampleStrategy.py`` for spot (``can_short = False``) with few
features, so a model trains in seconds: RSI, rate of change and relative volume over the periods of the
config's ``indicator_periods_candles``, plus the candle's own change. The model predicts the mean close of
the next ``label_period_candles`` candles relative to the current close (``&-s_close``). It enters when the
prediction is above +0.5 % and FreqAI trusts it (``do_predict == 1``), and exits when it turns negative.

The same strategy trains the model (``POST /api/v1/models/train``) and runs it live in a bot that received
it: the features must be the same on both sides.
"""

from functools import reduce

import talib.abstract as ta
from freqtrade.strategy import IStrategy
from pandas import DataFrame


class FreqaiExample(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    can_short = False
    minimal_roi = {"0": 0.02, "120": 0.0}  # noqa: RUF012 - Freqtrade reads these class attributes
    stoploss = -0.05
    process_only_new_candles = True
    use_exit_signal = True
    startup_candle_count = 40

    def feature_engineering_expand_all(self, dataframe: DataFrame, period: int, metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-rsi-period"] = ta.RSI(dataframe, timeperiod=period)
        dataframe["%-roc-period"] = ta.ROC(dataframe, timeperiod=period)
        dataframe["%-relative_volume-period"] = dataframe["volume"] / dataframe["volume"].rolling(period).mean()
        return dataframe

    def feature_engineering_expand_basic(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-pct-change"] = dataframe["close"].pct_change()
        return dataframe

    def feature_engineering_standard(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-hour_of_day"] = dataframe["date"].dt.hour
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        label_period = self.freqai_info["feature_parameters"]["label_period_candles"]
        dataframe["&-s_close"] = (
            dataframe["close"].shift(-label_period).rolling(label_period).mean() / dataframe["close"] - 1
        )
        return dataframe

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        conditions = [df["do_predict"] == 1, df["&-s_close"] > 0.005]
        df.loc[reduce(lambda x, y: x & y, conditions), ["enter_long", "enter_tag"]] = (1, "freqai")
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        conditions = [df["do_predict"] == 1, df["&-s_close"] < 0]
        df.loc[reduce(lambda x, y: x & y, conditions), "exit_long"] = 1
        return df
