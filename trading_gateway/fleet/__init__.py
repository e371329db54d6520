"""The gateway's fleet: its bots, what each should be doing, and what each does.

- :mod:`.bot`: ``ManagedBot`` (one bot in memory), ``Actual``, ``BotView``, the bot's own files (spec, failure).
- :mod:`.supervisor`: ``Supervisor``, the one state machine every bot's task runs (launch, poll, stop, restart
  policy) and the bot's records in the state file.
- :mod:`.service`: ``Fleet``, the commands that change what bots should do, reads, emergency stop, adoption.
- :mod:`.trades`: TRADE_OPENED / TRADE_CLOSED with deterministic ids; :mod:`.history`: closed trades read back.
- :mod:`.router`, :mod:`.schemas`, :mod:`.logs`: ``GET /api/v1/bots``, logs, ``POST /api/v1/emergency-stop``.

The command consumer and the event outbox are the gateway's side of the bus (:mod:`trading_gateway.bus`).
"""
