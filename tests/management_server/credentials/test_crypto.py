"""AES-GCM under rotating master keys, bound to the row."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from management_server.security.crypto import DecryptionError, MasterKeys


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def test_seal_open_and_rotate() -> None:
    old = MasterKeys.parse(f"k1:{key()}")
    sealed = old.seal(b"api-secret", b"row-1")
    assert b"api-secret" not in sealed.blob
    assert old.open(sealed, b"row-1") == b"api-secret"
    rotated = MasterKeys.parse(f"k1:{base64.b64encode(old.keys['k1']).decode()},k2:{key()}")
    assert rotated.active_id == "k2"
    assert rotated.open(sealed, b"row-1") == b"api-secret"  # old rows still open
    assert rotated.seal(b"x", b"r").key_id == "k2"


def test_a_blob_moved_to_another_row_or_key_does_not_open() -> None:
    keys = MasterKeys.parse(f"k1:{key()}")
    sealed = keys.seal(b"api-secret", b"row-1")
    with pytest.raises(DecryptionError, match="does not match"):
        keys.open(sealed, b"row-2")
    with pytest.raises(DecryptionError, match="not configured"):
        MasterKeys.parse(f"k9:{key()}").open(sealed, b"row-1")


def test_bad_keys_are_refused_and_a_file_is_made_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKeys.parse("k1:" + base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="kid:base64key"):
        MasterKeys.parse("justakey")
    first = MasterKeys.from_file(tmp_path / "master.keys")
    second = MasterKeys.from_file(tmp_path / "master.keys")
    assert first.keys == second.keys
    assert oct((tmp_path / "master.keys").stat().st_mode & 0o777) == "0o600"
