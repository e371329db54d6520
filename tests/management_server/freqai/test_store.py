"""The model store: bundles encrypted at rest in segments, under rotating master keys."""

from __future__ import annotations

import base64
import io
import os
import secrets
import shutil
import uuid
from pathlib import Path

import pytest

from management_server.freqai.store import MAGIC, SEGMENT, ModelStore, StoreError
from management_server.security.crypto import MasterKeys


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def keys() -> MasterKeys:
    return MasterKeys.parse(f"k1:{key()}")


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + SEGMENT // 2])
def test_a_bundle_comes_back_as_it_went_in(tmp_path: Path, keys: MasterKeys, size: int) -> None:
    store = ModelStore(tmp_path / "store", keys)
    data = os.urandom(size)
    model_id = uuid.uuid4()
    stored = store.put(model_id, io.BytesIO(data))
    assert (stored.key_id, stored.plain_size, stored.path) == ("k1", size, store.path(model_id))
    raw = stored.path.read_bytes()
    assert raw.startswith(MAGIC)
    if size >= 64:
        assert data[:64] not in raw  # encrypted, not just stored
    assert b"".join(store.segments(model_id)) == data
    assert all(len(s) <= SEGMENT for s in store.segments(model_id))
    with store.reader(model_id) as reader:
        first = reader.read(SEGMENT // 2 + 3)  # a read across segment edges returns what was asked
        assert first == data[: SEGMENT // 2 + 3]
        assert first + reader.read() == data
    out = io.BytesIO()
    assert store.copy_to(model_id, out) == size
    assert out.getvalue() == data
    assert oct(stored.path.parent.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in stored.path.parent.iterdir()] == [stored.path.name]  # no temporary file left


def test_a_short_reading_source_is_stored_whole(tmp_path: Path, keys: MasterKeys) -> None:
    class Trickle(io.RawIOBase):
        """Returns at most 1000 bytes per read, like a decompressing stream may."""

        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, target: bytearray) -> int:  # type: ignore[override]
            chunk = self.data.read(min(len(target), 1000))
            target[: len(chunk)] = chunk
            return len(chunk)

    store = ModelStore(tmp_path, keys)
    data = os.urandom(SEGMENT + 5000)
    model_id = uuid.uuid4()
    store.put(model_id, Trickle(data))  # type: ignore[arg-type]
    assert b"".join(store.segments(model_id)) == data


def _segments_offsets(path: Path) -> list[int]:
    raw = path.read_bytes()
    offset = len(MAGIC) + 2 + int.from_bytes(raw[len(MAGIC) : len(MAGIC) + 2], "big")
    offsets = []
    while offset < len(raw):
        offsets.append(offset)
        offset += 4 + int.from_bytes(raw[offset : offset + 4], "big")
    return offsets


def test_a_changed_cut_or_moved_file_does_not_decrypt(tmp_path: Path, keys: MasterKeys) -> None:
    store = ModelStore(tmp_path, keys)
    model_id = uuid.uuid4()
    store.put(model_id, io.BytesIO(os.urandom(2 * SEGMENT + 10)))
    path = store.path(model_id)
    original = path.read_bytes()
    offsets = _segments_offsets(path)
    assert len(offsets) == 3

    def broken(data: bytes, match: str) -> None:
        path.write_bytes(data)
        with pytest.raises(StoreError, match=match):
            b"".join(store.segments(model_id))
        path.write_bytes(original)

    flipped = bytearray(original)
    flipped[offsets[1] + 100] ^= 1
    broken(bytes(flipped), "can't be decrypted")  # one byte changed
    broken(original[: offsets[2]], "can't be decrypted")  # the last segment dropped: the one before is not "last"
    broken(original[: offsets[2] + 10], "truncated")
    second = original[offsets[1] : offsets[2]]
    third = original[offsets[2] :]
    broken(original[: offsets[1]] + third + second, "can't be decrypted")  # segments swapped
    broken(b"not a store file at all", "not a Freqfleet model store file")

    other = uuid.uuid4()
    shutil.copy(path, store.path(other))  # another model's file under this model's name
    with pytest.raises(StoreError, match="damaged header"):
        b"".join(store.segments(other))
    with pytest.raises(StoreError, match="is not in the model store"):
        next(store.segments(uuid.uuid4()))


def test_old_bundles_open_after_a_key_rotation_and_not_without_their_key(tmp_path: Path, keys: MasterKeys) -> None:
    store = ModelStore(tmp_path, keys)
    model_id = uuid.uuid4()
    store.put(model_id, io.BytesIO(b"bundle bytes"))
    old = base64.b64encode(keys.keys["k1"]).decode()
    rotated = ModelStore(tmp_path, MasterKeys.parse(f"k1:{old},k2:{key()}"))
    assert b"".join(rotated.segments(model_id)) == b"bundle bytes"
    assert rotated.put(uuid.uuid4(), io.BytesIO(b"new")).key_id == "k2"
    without = ModelStore(tmp_path, MasterKeys.parse(f"k2:{key()}"))
    with pytest.raises(StoreError, match="'k1' is not configured"):
        b"".join(without.segments(model_id))
