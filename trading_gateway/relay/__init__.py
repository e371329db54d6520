"""The market-data relay: many bots, one IP, no ban.

Every Freqtrade bot has its own ccxt client and believes it owns the exchange's whole request-weight limit; a few
bots on one IP get it banned. Each gateway runs one relay process (:mod:`trading_gateway.relay.keeper` starts it,
restarts it when it dies, and reads its numbers for the heartbeat and ``/metrics``); bots whose exchange has an
adapter (:mod:`trading_gateway.relay.adapters`) get the relay as ccxt's public API URL. The relay answers from a
cache what is still true (:mod:`.cache`), sends one request upstream for all bots asking the same, and keeps the
host's IP inside the exchange's limit with one budget shared round-robin by its bots (:mod:`.budget`).
"""
