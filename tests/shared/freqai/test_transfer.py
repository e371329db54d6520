"""Bundles through the bus: inline Base64 and chunks in a real Valkey."""

from __future__ import annotations

import base64
import io
import os
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.freqai.bundle import BadEncoding, SizeExceeded
from shared.freqai.transfer import (
    TransferMissing,
    decode_inline,
    model_bundle,
    publish_chunks,
    read_chunks,
    transfer_key,
)

SHA = "a" * 64


async def test_chunks_round_trip_with_a_ttl(redis_url: str) -> None:
    data = os.urandom(300_000)
    transfer = uuid.uuid4()
    async with aioredis.Redis.from_url(redis_url) as redis:
        count = await publish_chunks(redis, transfer, io.BytesIO(data), chunk_size=64 * 1024, ttl=120)
        assert count == 5
        assert 0 < await redis.ttl(transfer_key(transfer)) <= 120
        out = io.BytesIO()
        assert await read_chunks(redis, transfer, count, out, max_bytes=len(data)) == len(data)
        assert out.getvalue() == data
        with pytest.raises(SizeExceeded):
            await read_chunks(redis, transfer, count, io.BytesIO(), max_bytes=len(data) - 1)
        await redis.hdel(transfer_key(transfer), "3")
        with pytest.raises(TransferMissing, match="chunk 4 of 5"):
            await read_chunks(redis, transfer, count, io.BytesIO(), max_bytes=len(data))
        with pytest.raises(TransferMissing, match="chunk 1 of 2"):
            await read_chunks(redis, uuid.uuid4(), 2, io.BytesIO(), max_bytes=len(data))


async def test_model_bundle_is_inline_when_small_and_chunked_when_large(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "b.tar.zst"
    path.write_bytes(os.urandom(200_000))
    facts = {"model_id": uuid.uuid4(), "version": 1, "sha256": SHA, "size": 10, "signature": "c2ln"}
    async with aioredis.Redis.from_url(redis_url) as redis:
        inline = await model_bundle(redis, path, **facts)  # type: ignore[arg-type]
        assert inline.content_b64 == base64.b64encode(path.read_bytes()).decode()
        assert inline.chunk_count == 0
        chunked = await model_bundle(redis, path, inline_max=100_000, chunk_size=50_000, **facts)  # type: ignore[arg-type]
        assert chunked.content_b64 is None
        assert chunked.transfer_id is not None
        assert chunked.chunk_count == 4
        out = io.BytesIO()
        await read_chunks(redis, chunked.transfer_id, chunked.chunk_count, out, max_bytes=10**6)
        assert out.getvalue() == path.read_bytes()


def test_inline_content_must_be_strict_base64_within_the_limit() -> None:
    data = os.urandom(3_000_000)
    encoded = base64.b64encode(data).decode()
    out = io.BytesIO()
    assert decode_inline(encoded, out, max_bytes=len(data)) == len(data)
    assert out.getvalue() == data
    for bad in ("not base64!", "YWJj\nZGVm", "YWJjZA=", "ab$d"):
        with pytest.raises(BadEncoding, match="not valid Base64"):
            decode_inline(bad, io.BytesIO(), max_bytes=100)
    with pytest.raises(SizeExceeded):
        decode_inline(encoded, io.BytesIO(), max_bytes=len(data) - 10_000)
