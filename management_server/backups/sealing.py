"""Backup archives encrypted and authenticated with a key the operator keeps outside them.

An archive holds the master keys, the signing keys and the database dump, so it is written encrypted: the tar
(:mod:`.archive`) goes through AES-256-GCM in 1 MiB chunks (the STREAM construction: a 7-byte random nonce prefix,
the chunk's number and a last-chunk flag make each nonce; every chunk is authenticated with the header as
associated data), under a key derived with scrypt from the backup key (``FREQFLEET_BACKUP_KEY``, a passphrase,
or ``FREQFLEET_BACKUP_KEY_FILE``; by default ``<data dir>/backup.key``, made at the first backup: keep a copy
elsewhere, it is never in an archive). A changed, truncated, reordered or extended archive, or the wrong key, is
refused before anything is restored.

File layout: ``FFBACKUP2\\n``, the header's length (4 bytes, big endian), the header (JSON: kdf parameters, salt,
nonce prefix, chunk size), then the chunks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"FFBACKUP2\n"
CHUNK = 1024 * 1024
TAG = 16
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MAX_HEADER = 4096


class SealError(Exception):
    """The archive can't be opened: the message says why (wrong key, changed, not an archive)."""


def is_sealed(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def _key(passphrase: bytes, header: dict[str, Any]) -> bytes:
    kdf = Scrypt(salt=base64.b64decode(header["salt"]), length=32, n=header["n"], r=header["r"], p=header["p"])
    return kdf.derive(passphrase)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def seal_file(source: Path, target: Path, passphrase: bytes) -> None:
    """Write ``source`` encrypted to ``target`` (mode 0600)."""
    prefix = os.urandom(7)
    header: dict[str, Any] = {"kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(os.urandom(16)).decode()}
    header |= {"chunk": CHUNK, "nonce_prefix": base64.b64encode(prefix).decode()}
    head = json.dumps(header, sort_keys=True).encode()
    associated = hashlib.sha256(MAGIC + head).digest()
    aead = AESGCM(_key(passphrase, header))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as plain, os.fdopen(fd, "wb") as out:
        out.write(MAGIC + struct.pack(">I", len(head)) + head)
        index = 0
        chunk = plain.read(CHUNK)
        while True:
            following = plain.read(CHUNK)
            last = not following
            out.write(aead.encrypt(_nonce(prefix, index, last), chunk, associated))
            if last:
                break
            chunk, index = following, index + 1
            if index >= 2**32:
                raise SealError("the archive is too large to seal")


def _header(file: BinaryIO, path: Path) -> tuple[dict[str, Any], bytes]:
    if file.read(len(MAGIC)) != MAGIC:
        raise SealError(f"{path} is not an encrypted Freqfleet backup")
    (length,) = struct.unpack(">I", file.read(4))
    if not 0 < length <= MAX_HEADER:
        raise SealError(f"{path}: the archive's header is damaged")
    head = file.read(length)
    try:
        header: dict[str, Any] = json.loads(head)
        if header.get("kdf") != "scrypt" or header.get("chunk") != CHUNK:
            raise ValueError("unknown parameters")
        if not (2**14 <= int(header["n"]) <= 2**20 and 1 <= int(header["r"]) <= 32 and 1 <= int(header["p"]) <= 16):
            raise ValueError("key derivation parameters out of bounds")
        if len(base64.b64decode(header["nonce_prefix"])) != 7:
            raise ValueError("nonce prefix")
    except (ValueError, KeyError, TypeError) as exc:
        raise SealError(f"{path}: the archive's header is damaged ({exc})") from None
    return header, hashlib.sha256(MAGIC + head).digest()


def open_file(source: Path, target: Path, passphrase: bytes) -> None:
    """Decrypt ``source`` into ``target`` (0600), checking every chunk and the end; nothing is kept on failure."""
    try:
        with source.open("rb") as file:
            header, associated = _header(file, source)
            aead = AESGCM(_key(passphrase, header))
            prefix = base64.b64decode(header["nonce_prefix"])
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                index = 0
                chunk = file.read(CHUNK + TAG)
                while True:
                    following = file.read(CHUNK + TAG)
                    last = not following
                    try:
                        out.write(aead.decrypt(_nonce(prefix, index, last), chunk, associated))
                    except InvalidTag:
                        if index == 0:
                            raise SealError(
                                f"{source} does not open with this backup key (the wrong key, or a changed archive)"
                            ) from None
                        raise SealError(
                            f"{source} was changed or cut short (chunk {index} does not authenticate)"
                        ) from None
                    if last:
                        return
                    chunk, index = following, index + 1
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def new_key_file(path: Path) -> bytes:
    """Make a backup key file (0600) at ``path``; its key."""
    key = secrets.token_urlsafe(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    return key
