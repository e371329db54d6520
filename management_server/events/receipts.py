"""The receipts the management server sends each gateway for its events (``shared/bus/receipts.py``).

After each batch of ``freqfleet:events``, one entry per gateway that had events in it, on that gateway's
``freqfleet:receipts:<id>``: the ids of its events that need a receipt and were applied (now, or before: a copy),
and the batch's last entry id. Only signed, verified entries reach a batch, so ``source`` names the real sender.
"""

from __future__ import annotations

from collections import defaultdict

import redis.asyncio as aioredis

from shared.bus.consumer import AfterBatch
from shared.bus.messages import Envelope
from shared.bus.receipts import RECEIPTS_MAXLEN, needs_receipt, receipt_fields, receipts_stream

GATEWAY_SOURCE = "gateway:"


def receipt_sender(redis: aioredis.Redis) -> AfterBatch:
    async def send(messages: list[Envelope], through: str) -> None:
        if not messages:
            return
        by_gateway: dict[str, list[str]] = defaultdict(list)
        for message in messages:
            if message.source.startswith(GATEWAY_SOURCE):
                ids = by_gateway[message.source.removeprefix(GATEWAY_SOURCE)]
                if needs_receipt(message.type):
                    ids.append(str(message.event_id))
        if not by_gateway:
            return
        pipe = redis.pipeline(transaction=False)
        for gateway_id, ids in by_gateway.items():
            fields = receipt_fields(ids, through)
            pipe.xadd(receipts_stream(gateway_id), fields, maxlen=RECEIPTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()

    return send
