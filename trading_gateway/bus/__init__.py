"""The gateway's side of the bus: the command consumer (``commands``), the signature check of commands
(``signatures``) and the event publisher with its local outbox (``events``)."""
