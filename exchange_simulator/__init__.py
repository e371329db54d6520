"""An offline, Binance-compatible spot exchange for ccxt and Freqtrade: deterministic synthetic prices."""
