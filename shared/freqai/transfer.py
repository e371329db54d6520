"""Moving a compressed bundle through the bus: inline Base64, or chunks in Redis.

The bus message ``ModelBundle`` (``shared/bus/messages.py``) carries a bundle either inline
(``content_b64``: the compressed bytes, Base64) or by reference (``transfer_id`` and ``chunk_count``) so
that no stream entry is large:

- **Where chunks live.** One Redis hash per transfer, ``freqfleet:model-transfer:{transfer_id}``, field
  ``"0"``, ``"1"``, ... each holding :data:`CHUNK_SIZE` raw (not Base64) compressed bytes, with a TTL
  (:data:`CHUNK_TTL`, a day by default): a gateway that is away longer than that gets MODEL_REJECTED
  ("expired: deploy it again"), and nothing is left behind. Several gateways (and their retries) can read
  the same transfer; nobody deletes it before the TTL.
- **Bounded memory.** The writer reads the compressed file one chunk at a time (``HSET`` each, one
  ``EXPIRE`` first); the reader ``HGET``\\ s one chunk at a time into a file. Inline content is decoded in
  blocks as well. Neither side ever holds more than a chunk (or a block) beyond what the caller holds.
- **Which way.** :func:`model_bundle` picks inline up to :data:`INLINE_MAX` compressed bytes, chunks above.

Integrity is not this module's job: the signed sha256 and size of the uncompressed tar are checked after the
transfer (:func:`shared.freqai.bundle.decompress_verified`).
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import redis.asyncio as aioredis

from shared.bus.messages import ModelBundle
from shared.freqai.bundle import BadEncoding, BundleError, SizeExceeded

CHUNK_SIZE = 1024 * 1024
INLINE_MAX = 512 * 1024
CHUNK_TTL = 24 * 3600
B64_BLOCK = 4 * 256 * 1024  # Base64 characters decoded at a time (a multiple of 4)
KEY_PREFIX = "freqfleet:model-transfer:"


class TransferMissing(BundleError):
    """The chunks of a transfer are not (or no longer) in Redis."""


ChunkStore = aioredis.Redis
"""Where chunks are kept: the bus's Redis (an ``redis.asyncio.Redis`` client that returns bytes)."""


def transfer_key(transfer_id: uuid.UUID) -> str:
    return f"{KEY_PREFIX}{transfer_id}"


async def publish_chunks(
    redis: ChunkStore,
    transfer_id: uuid.UUID,
    source: BinaryIO,
    *,
    chunk_size: int = CHUNK_SIZE,
    ttl: int = CHUNK_TTL,
) -> int:
    """Store ``source`` (the compressed bundle) as chunks of ``transfer_id``; how many chunks."""
    if chunk_size <= 0 or ttl <= 0:
        raise ValueError("chunk_size and ttl must be positive")
    key = transfer_key(transfer_id)
    count = 0
    while chunk := source.read(chunk_size):
        await redis.hset(key, str(count), chunk)
        if count == 0:
            await redis.expire(key, ttl)
        count += 1
    if count == 0:
        raise ValueError("an empty bundle can't be transferred")
    await redis.expire(key, ttl)  # counted from the end of the upload
    return count


async def read_chunks(
    redis: ChunkStore, transfer_id: uuid.UUID, chunk_count: int, sink: BinaryIO, *, max_bytes: int
) -> int:
    """Write the chunks of ``transfer_id`` to ``sink`` in order; how many bytes.

    :raises TransferMissing: a chunk is not there (expired, or never written).
    :raises SizeExceeded: more than ``max_bytes`` arrive.
    """
    key = transfer_key(transfer_id)
    total = 0
    for index in range(chunk_count):
        chunk = await redis.hget(key, str(index))
        if chunk is None:
            raise TransferMissing(
                f"chunk {index + 1} of {chunk_count} of transfer {transfer_id} is not in Redis (expired after "
                f"{CHUNK_TTL // 3600} h, or never written): deploy the model again"
            )
        if not isinstance(chunk, bytes):
            chunk = str(chunk).encode()
        total += len(chunk)
        if total > max_bytes:
            raise SizeExceeded(f"the compressed bundle is larger than {max_bytes} bytes")
        sink.write(chunk)
    return total


def decode_inline(content_b64: str, sink: BinaryIO, *, max_bytes: int) -> int:
    """Decode inline Base64 content into ``sink`` block by block; how many bytes.

    :raises BadEncoding: not strict Base64 (characters outside the alphabet, bad padding).
    :raises SizeExceeded: it decodes to more than ``max_bytes``.
    """
    if len(content_b64) // 4 * 3 > max_bytes + 3:
        raise SizeExceeded(f"the compressed bundle is larger than {max_bytes} bytes")
    if len(content_b64) % 4:
        raise BadEncoding("content_b64 is not valid Base64 (its length is not a multiple of 4)")
    total = 0
    for start in range(0, len(content_b64), B64_BLOCK):
        try:
            block = base64.b64decode(content_b64[start : start + B64_BLOCK], validate=True)
        except (binascii.Error, ValueError):
            raise BadEncoding("content_b64 is not valid Base64") from None
        total += len(block)
        if total > max_bytes:
            raise SizeExceeded(f"the compressed bundle is larger than {max_bytes} bytes")
        sink.write(block)
    return total


def encode_inline(source: BinaryIO) -> str:
    """The Base64 of ``source`` (for bundles up to :data:`INLINE_MAX`)."""
    return base64.b64encode(source.read()).decode()


async def model_bundle(
    redis: ChunkStore,
    compressed: Path,
    *,
    model_id: uuid.UUID,
    version: int,
    sha256: str,
    size: int,
    signature: str,
    filename: str | None = None,
    inline_max: int = INLINE_MAX,
    chunk_size: int = CHUNK_SIZE,
    ttl: int = CHUNK_TTL,
) -> ModelBundle:
    """The ``ModelBundle`` of a compressed bundle file: inline when small, else chunks stored in Redis now.

    :param sha256: sha256 of the *uncompressed* tar (what was signed), :param size: its bytes.
    """
    name = filename or f"model-{model_id}-v{version}.tar.zst"
    common: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "filename": name,
        "compression": "zstd",
        "sha256": sha256,
        "size": size,
        "signature": signature,
    }
    with compressed.open("rb") as source:
        if os.fstat(source.fileno()).st_size <= inline_max:
            return ModelBundle(**common, content_b64=encode_inline(source))
        transfer_id = uuid.uuid4()
        count = await publish_chunks(redis, transfer_id, source, chunk_size=chunk_size, ttl=ttl)
    return ModelBundle(**common, transfer_id=transfer_id, chunk_count=count)
