"""The gateway's fleet: bus commands turned into bot actions, and everything the bots do reported back.

- :mod:`.service`: ``Fleet``, the bots' desired and actual state, a supervisor task per bot (launch,
  stop, restart policy, health poller, reconcile), emergency stop, adoption at start.
- :mod:`.commands`: ``CommandHandler`` for ``freqfleet:commands:{gateway_id}``.
- :mod:`.events`: ``EventPublisher``, events on ``freqfleet:events`` with a local outbox file.
- :mod:`.trades`: TRADE_OPENED / TRADE_CLOSED with deterministic ids.
- :mod:`.router`, :mod:`.deps`, :mod:`.schemas`: ``GET /api/v1/bots`` and ``POST /api/v1/emergency-stop``.
"""
