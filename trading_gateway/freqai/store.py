"""The gateway's store of verified model bundles: one unpacked copy per sha256, shared by its bots.

Layout, under the gateway's data folder::

    models/store/<sha256>/            a verified, unpacked bundle (manifest.json, pair_dictionary.json,
                                      sub-train-<BASE>_<ts>/...): what bots' ``data_path`` points at
    models/incoming/                  transfers being verified (removed whatever happens)

:meth:`ModelStore.receive` turns a ``ModelBundle`` message into a stored bundle, refusing it (a
:class:`~shared.freqai.bundle.BundleError` that says why) before anything lands where a bot loads from:

1. the size limits (``FREQFLEET_MODEL_MAX_BUNDLE_BYTES`` uncompressed, ``..._MAX_COMPRESSED_BYTES``);
2. the Ed25519 signature over (model id, version, sha256, size), with the management server's keys;
3. the transfer: inline Base64 decoded block by block, or the chunks read one by one from Redis, into a
   file under ``incoming/`` (bounded memory, and never more than the compressed limit);
4. decompression with the declared size as a hard ceiling, then size and sha256 compared with the signed ones
   (a bundle already in the store is still checked this way, without being unpacked again: a broken
   transfer is refused, not hidden by the cache);
5. unpacking into ``store/.tmp-*`` with the archive checks (only expected file names, no path outside the
   folder, no links, every file as the manifest says), the library versions compared with this gateway's,
   then one ``rename`` to ``store/<sha256>``.

The store is content-addressed, so bots on the same version share one copy; a version stays while a bot's
history (its last ``FREQFLEET_MODEL_HISTORY`` versions) names it, which is what makes a rollback instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.bus.messages import ModelBundle
from shared.freqai.bundle import (
    MANIFEST,
    BundleError,
    Manifest,
    SignatureInvalid,
    SizeExceeded,
    decompress_verified,
    extract_bundle,
    read_manifest,
    verify_signature,
    version_mismatches,
)
from shared.freqai.transfer import ChunkStore, decode_inline, read_chunks
from shared.logging import get_logger
from trading_gateway.freqai.keys import ModelKeySource, ModelKeysUnavailable

log = get_logger(__name__)

STORE_DIR = "store"
INCOMING_DIR = "incoming"
GC_GRACE = 600.0  # seconds a stored bundle is kept after it was stored, referenced or not


class IncompatibleBundle(BundleError):
    """A valid bundle this gateway's bots can't use (other library versions, pairs, timeframe)."""


@dataclass(frozen=True)
class StoredBundle:
    """A verified bundle in the store."""

    sha256: str
    folder: Path
    manifest: Manifest


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


class ModelStore:
    def __init__(
        self,
        root: Path,
        *,
        keys: ModelKeySource | None,
        redis: ChunkStore | None,
        max_size: int,
        max_compressed: int,
    ) -> None:
        self.root = root
        self.store = root / STORE_DIR
        self.incoming = root / INCOMING_DIR
        self.keys = keys
        self.redis = redis
        self.max_size = max_size
        self.max_compressed = max_compressed
        self._locks: dict[str, asyncio.Lock] = {}

    def folder(self, sha256: str) -> Path:
        return self.store / sha256

    def get(self, sha256: str) -> StoredBundle | None:
        """The stored bundle of ``sha256``, or None."""
        folder = self.folder(sha256)
        try:
            manifest = read_manifest(folder)
        except (OSError, ValueError):
            return None
        return StoredBundle(sha256=sha256, folder=folder, manifest=manifest)

    # ------------------------------------------------------------------------------------- receiving

    async def receive(self, bundle: ModelBundle) -> StoredBundle:
        """Verify ``bundle`` and put it in the store (once per sha256); see the module's steps.

        :raises BundleError: the bundle is refused; the message says why.
        """
        if bundle.size > self.max_size:
            raise SizeExceeded(
                f"the bundle is {bundle.size} bytes uncompressed; this gateway takes at most {self.max_size} "
                "(FREQFLEET_MODEL_MAX_BUNDLE_BYTES)"
            )
        await self._verify_signature(bundle)
        lock = self._locks.setdefault(bundle.sha256, asyncio.Lock())
        async with lock:
            self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.store.mkdir(parents=True, exist_ok=True, mode=0o750)
            stem = self.incoming / f"{uuid.uuid4().hex}"
            compressed = stem.with_suffix(".zst")
            tar = stem.with_suffix(".tar")
            try:
                await self._transfer(bundle, compressed)
                cached = self.get(bundle.sha256)
                await asyncio.to_thread(self._decompress, bundle, compressed, None if cached else tar)
                if cached is not None:
                    os.utime(cached.folder)  # recently used: the collector keeps it
                    log.info("model bundle verified; already in the store", sha256=bundle.sha256)
                    return StoredBundle(bundle.sha256, cached.folder, cached.manifest)
                stored = await asyncio.to_thread(self._unpack, bundle, tar)
            finally:
                for path in (compressed, tar):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        log.info("model bundle stored", sha256=bundle.sha256, size=bundle.size, pairs=list(stored.manifest.pairs))
        return stored

    async def _verify_signature(self, bundle: ModelBundle) -> None:
        if self.keys is None:
            raise SignatureInvalid("this gateway has no source of model-signing keys, so it can't accept models")

        def check(keys: list[Any]) -> None:
            verify_signature(
                keys,
                bundle.signature,
                model_id=bundle.model_id,
                version=bundle.version,
                sha256=bundle.sha256,
                size=bundle.size,
            )

        try:
            keys = await self.keys.public_keys()
            try:
                check(keys)
            except SignatureInvalid:
                refreshed = await self.keys.public_keys(refresh=True)  # a rotation since the last fetch?
                if refreshed == keys:
                    raise
                check(refreshed)
        except ModelKeysUnavailable as exc:
            raise SignatureInvalid(str(exc)) from None

    async def _transfer(self, bundle: ModelBundle, dest: Path) -> None:
        with dest.open("wb") as out:
            os.fchmod(out.fileno(), 0o600)
            if bundle.content_b64 is not None:
                await asyncio.to_thread(decode_inline, bundle.content_b64, out, max_bytes=self.max_compressed)
                return
            if self.redis is None or bundle.transfer_id is None:
                raise BundleError("this gateway can't read chunked transfers (no Redis)")
            await read_chunks(self.redis, bundle.transfer_id, bundle.chunk_count, out, max_bytes=self.max_compressed)

    def _decompress(self, bundle: ModelBundle, compressed: Path, tar: Path | None) -> None:
        with compressed.open("rb") as source:
            if tar is None:
                sink: Any = _NullSink()
                decompress_verified(
                    source,
                    sink,
                    sha256=bundle.sha256,
                    size=bundle.size,
                    compression=bundle.compression,
                    max_size=self.max_size,
                )
                return
            with tar.open("wb") as out:
                decompress_verified(
                    source,
                    out,
                    sha256=bundle.sha256,
                    size=bundle.size,
                    compression=bundle.compression,
                    max_size=self.max_size,
                )

    def _unpack(self, bundle: ModelBundle, tar: Path) -> StoredBundle:
        staging = self.store / f".tmp-{uuid.uuid4().hex}"
        manifest = extract_bundle(tar, staging)
        try:
            mismatches = version_mismatches(manifest)
            if mismatches:
                raise IncompatibleBundle(
                    "the model was trained with other library versions than this gateway's bots run ("
                    + ", ".join(mismatches)
                    + "): its pickles may not load; train it with the versions of constraints.txt"
                )
            final = self.folder(bundle.sha256)
            try:
                staging.rename(final)
            except OSError:
                if not (final / MANIFEST).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)  # stored meanwhile by another receiver
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredBundle(bundle.sha256, final, manifest)

    # ------------------------------------------------------------------------------------- collecting

    def collect(self, keep: Iterable[str], *, grace: float = GC_GRACE) -> list[str]:
        """Remove stored bundles not in ``keep`` and not used in the last ``grace`` seconds; their sha256s."""
        wanted = set(keep)
        removed = []
        now = time.time()
        try:
            entries = list(self.store.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            name = entry.name
            try:
                recent = now - entry.stat().st_mtime < grace
            except FileNotFoundError:
                continue
            if name in wanted or recent:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            if not name.startswith(".tmp-"):
                removed.append(name)
        for stale in self.incoming.glob("*") if self.incoming.is_dir() else []:
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > grace:
                    stale.unlink()
        if removed:
            log.info("model bundles removed from the store", sha256s=removed)
        return removed
