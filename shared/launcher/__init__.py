"""The fork-server launcher: one process per gateway that has imported what every bot imports (Freqtrade, ccxt,
pandas, NumPy, TA-Lib; FreqAI's libraries when asked), froze it (``gc.freeze``) and forks a bot on request, so
the bots share those pages instead of each importing them again (``server.py``: the process; ``child.py``: what
a forked child does before Freqtrade's entry point; ``protocol.py``: the messages).

It lives in ``shared`` because a forked child runs this code after its sandbox (Landlock) is on, and ``shared`` is
in every sandbox's read set; user code (strategies, models) is only ever imported in a child, by Freqtrade.
"""
