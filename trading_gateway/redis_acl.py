"""What a gateway may do in Redis: the ACL of its own Valkey user.

A gateway's host runs untrusted code (sandboxed), so its Redis credential is the one most worth stealing. With
the rules below a gateway's user reaches only its own keys: its command stream (and dead letters, pending-error
notes, dedupe marks, generations), its bots' leases, the events stream to append to, and, read-only, the token
revocations, model-transfer chunks, which gateway holds each bot and the receipts of its own events. It can't read
other gateways' commands or the events of others, delete the management server's keys (revocations, login
throttles, rate limits, Celery's queues), name a bot's holder, run administrative commands (``FLUSHALL``,
``CONFIG``, ``KEYS``, ``DEBUG``...) or anything else ``@dangerous``.

``freqfleet up`` makes this user on its embedded Valkey at every start (:meth:`freqfleet.embedded.EmbeddedValkey.
user_url`); with your own Redis or Valkey 7+, create it with ``ACL SETUSER gateway-<id> on >password <rules...>`` from
:func:`acl_rules` (``python -c "from trading_gateway.redis_acl import acl_rules; print(' '.join(acl_rules('ID')))"``).
"""

from __future__ import annotations

from shared.bus.leases import HOLDER_PREFIX, leases_key
from shared.bus.receipts import receipts_stream
from shared.bus.streams import DEAD_LETTER_SUFFIX, EVENTS_STREAM, commands_stream, gateway_group

COMMANDS = [
    "-@all",
    "+@connection",
    "+@read",
    "+@write",
    "+@stream",
    "+@hash",
    "+@string",
    "+@keyspace",
    "+@scripting",
    "-@dangerous",
    "-@admin",
    "+time",
]  # fmt: skip  (TIME: leases expire on Redis's clock)


def acl_user(gateway_id: str) -> str:
    return f"gateway-{gateway_id}"


def acl_rules(gateway_id: str) -> list[str]:
    """The ACL rules (after ``reset on >password``) of gateway ``gateway_id``'s Valkey user."""
    stream = commands_stream(gateway_id)
    group = gateway_group(gateway_id)
    return [
        *COMMANDS,
        "resetkeys",
        "resetchannels",
        f"~{stream}",
        f"~{stream}{DEAD_LETTER_SUFFIX}",
        f"~freqfleet:bus-errors:{stream}:*",
        f"~freqfleet:generations:{gateway_id}",
        f"~{leases_key(gateway_id)}",  # its bots' leases (shared/bus/leases.py)
        f"~freqfleet:processed:{group}:*",
        f"%W~{EVENTS_STREAM}",
        "%R~freqfleet:auth:*",
        "%R~freqfleet:model-transfer:*",
        f"%R~{HOLDER_PREFIX}*",  # who holds each bot, as the management server says
        f"%R~{receipts_stream(gateway_id)}",  # which of its events the management server applied
    ]
