"""The model store: bundle files on disk, encrypted at rest with the master keys (AES-256-GCM).

A bundle can be hundreds of megabytes, so it is not sealed as one piece (that would hold it all in memory
twice) but in segments of :data:`SEGMENT` bytes, each sealed by :class:`~management_server.security.crypto.
MasterKeys` like the exchange credentials are, under the same key ids. Each segment's associated data names
the model, the segment's index and whether it is the last one, so segments can't be reordered, moved to
another model, dropped or cut off at the end without the decryption failing.

File layout (``<store>/<model id>.bundle``)::

    b"FFMODEL1"  magic
    u16          header length, then the header: JSON {"model_id", "key_id", "segment"}
    repeated:    u32 length of a sealed segment, then the sealed segment (nonce, ciphertext, tag)

Writing goes to a temporary file that is renamed into place, so a reader sees the whole file or none.
Memory stays at about one segment whatever the bundle's size, in both directions.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from management_server.security.crypto import DecryptionError, MasterKeys, Sealed

MAGIC = b"FFMODEL1"
SEGMENT = 1024 * 1024
MAX_HEADER = 4096
MAX_SEALED = SEGMENT + 64
SUFFIX = ".bundle"


class StoreError(Exception):
    """A stored bundle that is missing, damaged, or sealed with a key that is not configured."""


@dataclass(frozen=True)
class StoredBundle:
    model_id: uuid.UUID
    key_id: str
    path: Path
    plain_size: int  # bytes of the compressed bundle (what was encrypted)


def _read_full(source: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end (a stream's ``read`` may return less before it)."""
    parts = []
    wanted = size
    while wanted > 0:
        part = source.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


def _associated(model_id: uuid.UUID, index: int, last: bool) -> bytes:
    return f"freqfleet-model-store:{model_id}:{index}:{'last' if last else 'more'}".encode()


class ModelStore:
    """Encrypted bundle files in ``root`` (created, mode 0700)."""

    def __init__(self, root: Path, keys: MasterKeys) -> None:
        self.root = root
        self.keys = keys

    def path(self, model_id: uuid.UUID) -> Path:
        return self.root / f"{model_id}{SUFFIX}"

    def exists(self, model_id: uuid.UUID) -> bool:
        return self.path(model_id).is_file()

    def ensure_root(self) -> None:
        """The store's folder, private to this user (mode 0700)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)

    def put(self, model_id: uuid.UUID, source: BinaryIO) -> StoredBundle:
        """Encrypt everything ``source`` holds as the bundle of ``model_id`` (replacing any earlier one)."""
        self.ensure_root()
        key_id = self.keys.active_id
        header = json.dumps({"model_id": str(model_id), "key_id": key_id, "segment": SEGMENT}).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{model_id}.", suffix=".tmp", dir=self.root)
        total = 0
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(MAGIC + struct.pack(">H", len(header)) + header)
                index = 0
                block = _read_full(source, SEGMENT)
                while True:
                    following = _read_full(source, SEGMENT) if len(block) == SEGMENT else b""
                    last = not following
                    sealed = self.keys.seal(block, _associated(model_id, index, last))
                    if sealed.key_id != key_id:  # the keys are immutable after start; this would be a bug
                        raise StoreError("the master key changed while a bundle was written")
                    out.write(struct.pack(">I", len(sealed.blob)) + sealed.blob)
                    total += len(block)
                    if last:
                        break
                    block = following
                    index += 1
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path(model_id))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return StoredBundle(model_id, key_id, self.path(model_id), total)

    def put_file(self, model_id: uuid.UUID, source: Path) -> StoredBundle:
        with source.open("rb") as f:
            return self.put(model_id, f)

    def segments(self, model_id: uuid.UUID) -> Iterator[bytes]:
        """The decrypted bundle of ``model_id``, one segment at a time.

        :raises StoreError: no such bundle, a damaged or truncated file, or a key that is not configured.
        """
        path = self.path(model_id)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise StoreError(f"the bundle of model {model_id} is not in the model store ({self.root})") from None
        with f:
            header = self._header(f, model_id)
            key_id = str(header["key_id"])
            index = 0
            sealed = self._next(f)
            if sealed is None:
                raise StoreError(f"the stored bundle of model {model_id} is empty (damaged)")
            while sealed is not None:
                following = self._next(f)
                try:
                    plain = self.keys.open(Sealed(key_id, sealed), _associated(model_id, index, following is None))
                except DecryptionError as exc:
                    raise StoreError(f"the stored bundle of model {model_id} can't be decrypted: {exc}") from None
                yield plain
                sealed = following
                index += 1

    def reader(self, model_id: uuid.UUID) -> io.BufferedReader:
        """A file-like reader of the decrypted bundle (for streaming it onward with bounded memory); ``read(n)``
        returns ``n`` bytes until the end."""
        return io.BufferedReader(DecryptingReader(self.segments(model_id)), buffer_size=SEGMENT)

    def copy_to(self, model_id: uuid.UUID, dest: BinaryIO) -> int:
        total = 0
        for segment in self.segments(model_id):
            dest.write(segment)
            total += len(segment)
        return total

    def delete(self, model_id: uuid.UUID) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(model_id).unlink()

    @staticmethod
    def _header(f: BinaryIO, model_id: uuid.UUID) -> dict[str, Any]:
        start = f.read(len(MAGIC) + 2)
        if len(start) != len(MAGIC) + 2 or not start.startswith(MAGIC):
            raise StoreError(f"the stored bundle of model {model_id} is not a Freqfleet model store file")
        (length,) = struct.unpack(">H", start[len(MAGIC) :])
        raw = f.read(length) if length <= MAX_HEADER else b""
        try:
            header: Any = json.loads(raw)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("model_id") != str(model_id) or not header.get("key_id"):
            raise StoreError(f"the stored bundle of model {model_id} has a damaged header (or another model's)")
        return header

    @staticmethod
    def _next(f: BinaryIO) -> bytes | None:
        raw = f.read(4)
        if not raw:
            return None
        if len(raw) != 4:
            raise StoreError("a stored bundle ends in the middle of a segment (truncated)")
        (length,) = struct.unpack(">I", raw)
        if length > MAX_SEALED:
            raise StoreError("a stored bundle has a segment larger than any the store writes (damaged)")
        blob = f.read(length)
        if len(blob) != length:
            raise StoreError("a stored bundle ends in the middle of a segment (truncated)")
        return blob


class DecryptingReader(io.RawIOBase):
    """``read(n)`` over decrypted segments; holds at most one segment."""

    def __init__(self, segments: Iterator[bytes]) -> None:
        super().__init__()
        self._segments = segments
        self._buffer = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        while self._offset >= len(self._buffer):
            try:
                self._buffer = next(self._segments)
            except StopIteration:
                return 0
            self._offset = 0
        count = min(len(view), len(self._buffer) - self._offset)
        view[:count] = self._buffer[self._offset : self._offset + count]
        self._offset += count
        if self._offset >= len(self._buffer):
            self._buffer = b""
            self._offset = 0
        return count

    def close(self) -> None:
        close = getattr(self._segments, "close", None)
        if close is not None:
            close()
        super().close()
