"""Encrypted backup archives: chunks authenticated one by one, the end marked, the key checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from management_server.backups.sealing import CHUNK, TAG, SealError, is_sealed, open_file, seal_file


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5])
def test_a_sealed_file_opens_to_the_same_bytes(tmp_path: Path, size: int) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(size))
    seal_file(plain, tmp_path / "sealed", b"key")
    assert is_sealed(tmp_path / "sealed")
    assert (tmp_path / "sealed").stat().st_mode & 0o777 == 0o600
    open_file(tmp_path / "sealed", tmp_path / "opened", b"key")
    assert (tmp_path / "opened").read_bytes() == plain.read_bytes()


def test_cut_reordered_or_extended_archives_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(2 * CHUNK + 5))
    seal_file(plain, tmp_path / "sealed", b"key")
    raw = (tmp_path / "sealed").read_bytes()
    body_start = len(raw) - (2 * (CHUNK + TAG) + 5 + TAG)
    head, first, second, last = (
        raw[:body_start],
        raw[body_start : body_start + CHUNK + TAG],
        raw[body_start + CHUNK + TAG : body_start + 2 * (CHUNK + TAG)],
        raw[body_start + 2 * (CHUNK + TAG) :],
    )
    assert head + first + second + last == raw
    for name, content in (
        ("cut", head + first + second),  # the last chunk dropped: the one before is not marked last
        ("swapped", head + second + first + last),
        ("extended", raw + last),
        ("flipped", head + first + bytes([second[0] ^ 1]) + second[1:] + last),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SealError, match=r"was changed or cut short|does not open"):
            open_file(tmp_path / name, tmp_path / f"{name}.out", b"key")
        assert not (tmp_path / f"{name}.out").exists()
    with pytest.raises(SealError, match="does not open with this backup key"):
        open_file(tmp_path / "sealed", tmp_path / "wrong.out", b"other key")
    (tmp_path / "not-an-archive").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(SealError, match="not an encrypted Freqfleet backup"):
        open_file(tmp_path / "not-an-archive", tmp_path / "zip.out", b"key")
