"""The gateway's store of verified bundles, with real keys served over HTTP and a real Valkey for chunks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from management_server.security.keys import KeyRing, SigningKey
from shared.bus.messages import ModelBundle
from shared.freqai.bundle import BadEncoding, BundleError, HashMismatch, SignatureInvalid, sign_bundle
from shared.freqai.transfer import model_bundle
from tests.freqai_models import fake_model_dir, flip_byte, pack_fake
from tests.helpers import free_port, serve
from tests.trading_gateway.freqai.conftest import Authority, inline_bundle
from trading_gateway.freqai.keys import MODEL_KEYS_PATH, ModelKeySource
from trading_gateway.freqai.store import IncompatibleBundle, ModelStore

LIMIT = 10 * 1024 * 1024


def store_for(root: Path, keys: ModelKeySource, redis: aioredis.Redis) -> ModelStore:
    return ModelStore(root / "models", keys=keys, redis=redis, max_size=LIMIT, max_compressed=LIMIT)


async def test_a_version_is_verified_and_unpacked_once_and_every_transfer_is_checked(
    authority: Authority, redis_url: str, tmp_path: Path
) -> None:
    keys = ModelKeySource(authority.tokens.jwks_url + MODEL_KEYS_PATH, tmp_path / "model-keys.json")
    packed = pack_fake(fake_model_dir(tmp_path), tmp_path / "b.tar.zst")
    compressed = packed.path.read_bytes()
    model_id = uuid.uuid4()
    facts: dict[str, Any] = {"model_id": model_id, "version": 1, "sha256": packed.sha256, "size": packed.size}
    try:
        async with aioredis.Redis.from_url(redis_url) as redis:
            store = store_for(tmp_path, keys, redis)
            stored = await store.receive(authority.inline(compressed, **facts))
            assert stored.folder == tmp_path / "models" / "store" / packed.sha256
            assert stored.manifest == packed.manifest
            assert sorted(p.name for p in stored.folder.iterdir()) == [
                "manifest.json",
                "pair_dictionary.json",
                f"sub-train-BTC_{1767484800}",
                f"sub-train-ETH_{1767484800}",
            ]
            assert (tmp_path / "model-keys.json").is_file()  # kept for a start without the management server
            again = await store.receive(authority.inline(compressed, **facts))
            assert again.folder == stored.folder
            with pytest.raises((BadEncoding, HashMismatch)):  # a stored version's broken transfer is still refused
                await store.receive(authority.inline(flip_byte(compressed, len(compressed) // 2), **facts))
            chunked = await model_bundle(
                redis, packed.path, signature=authority.sign(**facts), inline_max=0, chunk_size=4096, **facts
            )
            assert chunked.chunk_count > 1
            assert (await store.receive(chunked)).folder == stored.folder
            assert list(store.incoming.iterdir()) == []  # nothing left of the transfers
            assert store.get(packed.sha256) is not None
            assert store.collect([], grace=3600) == []  # recently used: kept
            assert store.collect([packed.sha256], grace=0) == []
            assert store.collect([], grace=0) == [packed.sha256]
            assert store.get(packed.sha256) is None
    finally:
        await keys.client.aclose()


async def test_a_rotated_key_is_fetched_and_an_unknown_one_refused(redis_url: str, tmp_path: Path) -> None:
    ring = KeyRing([SigningKey.of(Ed25519PrivateKey.generate())])
    app = FastAPI()

    @app.get("/.well-known/model-keys.json")
    async def model_keys() -> dict[str, Any]:
        return ring.jwks()

    packed = pack_fake(fake_model_dir(tmp_path), tmp_path / "b.tar.zst")
    facts: dict[str, Any] = {"model_id": uuid.uuid4(), "version": 1, "sha256": packed.sha256, "size": packed.size}

    def bundle(key: Ed25519PrivateKey) -> ModelBundle:
        signature = sign_bundle(key, **facts)
        return inline_bundle(packed.path.read_bytes(), signature=signature, **facts)

    async with serve(app) as url, aioredis.Redis.from_url(redis_url) as redis:
        keys = ModelKeySource(url + MODEL_KEYS_PATH, tmp_path / "model-keys.json")
        keys.refetch_interval = 0
        try:
            store = store_for(tmp_path, keys, redis)
            await store.receive(bundle(ring.active.private))
            new = SigningKey.of(Ed25519PrivateKey.generate())
            ring.keys.append(new)  # rotated after the gateway fetched the keys
            await store.receive(bundle(new.private))
            with pytest.raises(SignatureInvalid, match="does not verify"):
                await store.receive(bundle(Ed25519PrivateKey.generate()))
        finally:
            await keys.client.aclose()
    # The management server is gone: the copy on disk still verifies; without it nothing does.
    cached = ModelKeySource(f"http://127.0.0.1:{free_port()}" + MODEL_KEYS_PATH, tmp_path / "model-keys.json")
    lost = ModelKeySource(f"http://127.0.0.1:{free_port()}" + MODEL_KEYS_PATH, tmp_path / "nothing.json")
    async with aioredis.Redis.from_url(redis_url) as redis:
        try:
            await store_for(tmp_path / "cached", cached, redis).receive(bundle(new.private))
            with pytest.raises(SignatureInvalid, match="keys are not available"):
                await store_for(tmp_path / "lost", lost, redis).receive(bundle(new.private))
        finally:
            await cached.client.aclose()
            await lost.client.aclose()


async def test_a_bundle_of_other_library_versions_is_refused(
    authority: Authority, redis_url: str, tmp_path: Path
) -> None:
    packed = pack_fake(fake_model_dir(tmp_path), tmp_path / "b.tar.zst", versions={"scikit-learn": "0.0.1"})
    facts: dict[str, Any] = {"model_id": uuid.uuid4(), "version": 1, "sha256": packed.sha256, "size": packed.size}
    keys = ModelKeySource(authority.tokens.jwks_url + MODEL_KEYS_PATH, tmp_path / "model-keys.json")
    async with aioredis.Redis.from_url(redis_url) as redis:
        try:
            store = store_for(tmp_path, keys, redis)
            with pytest.raises(IncompatibleBundle, match=r"scikit-learn 0\.0\.1 \(here "):
                await store.receive(authority.inline(packed.path.read_bytes(), **facts))
            assert list(store.store.iterdir()) == []
            with pytest.raises(BundleError, match="no Redis"):
                await ModelStore(tmp_path / "m2", keys=keys, redis=None, max_size=LIMIT, max_compressed=LIMIT).receive(
                    ModelBundle(
                        **facts,
                        filename="x",
                        signature=authority.sign(**facts),
                        transfer_id=uuid.uuid4(),
                        chunk_count=1,
                    )
                )
        finally:
            await keys.client.aclose()
