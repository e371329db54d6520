"""Receipts: the management server telling a gateway which of its events it has applied.

A gateway keeps each event it reports until the management server has applied it (``trading_gateway/bus/
receipts.py``); Redis replicates asynchronously, so an event on the stream can still be lost with the stream (a
failover to a replica that had not received it, a ``FLUSHALL``, a restored backup). The management server's
events consumer, once a batch is applied (or recognised as applied before), appends one entry per gateway to
``freqfleet:receipts:<gateway id>`` with the applied events' ids and how far it has read the events stream (the
batch's last entry id); the gateway reads its stream and forgets those events. An event still unconfirmed once the
management server has read past it was lost by Redis: it is published again, same ``event_id``, and the management
server applies it once (its handlers are idempotent, the non-idempotent ones claim the event first). While the
management server is away nothing is read past, and nothing is sent twice. (A gateway may not read the events
stream itself: it holds every gateway's reports.)

Any event of a gateway in a batch earns it a receipt, heartbeats too (with no ids to confirm): so a gateway learns
how far the management server has read at least once a heartbeat interval.

Not every event is kept: snapshots (``BOT_STATUS``, ``GATEWAY_HEARTBEAT``) are superseded seconds later, and a
command's answer (``COMMAND_ACCEPTED`` / ``COMMAND_REJECTED``) is sent again whenever its command is published
again, which the management server does until the answer arrives (``management_server/bus/relay.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

RECEIPTS_PREFIX = "freqfleet:receipts:"
RECEIPTS_MAXLEN = 10_000  # entries per gateway; each names a batch of events
EVENT_IDS_FIELD = "event_ids"
THROUGH_FIELD = "through"
NOT_KEPT = frozenset({"BOT_STATUS", "GATEWAY_HEARTBEAT", "COMMAND_ACCEPTED", "COMMAND_REJECTED"})


def receipts_stream(gateway_id: str) -> str:
    """Where the management server confirms gateway ``gateway_id``'s events."""
    return f"{RECEIPTS_PREFIX}{gateway_id}"


def needs_receipt(message_type: str) -> bool:
    """Whether a gateway keeps an event of this type until the management server confirms it."""
    return message_type not in NOT_KEPT


def receipt_fields(event_ids: Iterable[str], through: str) -> dict[str, str]:
    return {EVENT_IDS_FIELD: ",".join(event_ids), THROUGH_FIELD: through}


def receipt_ids(fields: Mapping[bytes, bytes]) -> list[str]:
    """The event ids a receipt entry confirms (none from an entry that isn't one)."""
    raw = fields.get(EVENT_IDS_FIELD.encode(), b"")
    return [part for part in raw.decode(errors="replace").split(",") if part]


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as something to compare; (0, 0) for what isn't one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def receipt_through(fields: Mapping[bytes, bytes]) -> tuple[int, int]:
    """How far the management server had read the events stream when it wrote the receipt."""
    return entry_key(fields.get(THROUGH_FIELD.encode(), b"").decode(errors="replace"))
