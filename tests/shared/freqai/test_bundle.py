"""Bundles without Freqtrade: a model folder laid out as FreqAI saves one, packed, signed, verified, unpacked."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.freqai import bundle
from shared.freqai.bundle import (
    BadEncoding,
    HashMismatch,
    SignatureInvalid,
    SizeExceeded,
    UnsafeArchive,
    decompress_verified,
    extract_bundle,
    pack_bundle,
    sign_bundle,
    verify_signature,
)
from shared.freqai.catalog import ALLOWED_MODELS, FREQAIMODELS_DIR, UnknownModel, freqfleet_class
from tests.freqai_models import FROM, TO, TS, fake_model_dir, flip_byte, pack_fake, tar_of, zstd


@pytest.fixture
def packed(tmp_path: Path) -> bundle.PackedBundle:
    return pack_fake(fake_model_dir(tmp_path), tmp_path / "bundle.tar.zst")


def unpack(data: bytes, sha256: str, size: int, dest: Path, max_size: int = bundle.DEFAULT_MAX_SIZE) -> bundle.Manifest:
    tar = dest.with_suffix(".tar")
    with tar.open("wb") as out:
        decompress_verified(io.BytesIO(data), out, sha256=sha256, size=size, max_size=max_size)
    return extract_bundle(tar, dest)


def test_pack_is_deterministic_and_holds_only_what_a_live_bot_reads(tmp_path: Path) -> None:
    folder = fake_model_dir(tmp_path)
    first = pack_fake(folder, tmp_path / "1.tar.zst")
    second = pack_fake(folder, tmp_path / "2.tar.zst")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256
    assert first.size == second.size
    assert first.compressed_size == len(first.path.read_bytes())
    tar_bytes = zstd_decompress(first.path.read_bytes())
    assert hashlib.sha256(tar_bytes).hexdigest() == first.sha256
    assert len(tar_bytes) == first.size
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "manifest.json"
    assert "pair_dictionary.json" in names
    assert not [n for n in names if "trained_df" in n or "trained_dates_df" in n]
    assert len([n for n in names if n.startswith("sub-train-")]) == 2 * 4
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    manifest = first.manifest
    assert set(manifest.pairs) == {"BTC/USDT", "ETH/USDT"}
    assert manifest.pairs["BTC/USDT"].features == ["%-rsi-period_10_BTC/USDT_5m", "%-hour_of_day"]
    assert manifest.pairs["BTC/USDT"].labels == ["&-s_close"]
    assert manifest.versions["freqtrade"]
    assert manifest.versions["lightgbm"]
    assert manifest.trained_from == FROM
    assert manifest.metrics == {"BTC/USDT": {"r2": 0.1}}


def zstd_decompress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def test_a_bundle_unpacks_to_the_files_it_was_made_of(tmp_path: Path, packed: bundle.PackedBundle) -> None:
    dest = tmp_path / "unpacked"
    manifest = unpack(packed.path.read_bytes(), packed.sha256, packed.size, dest)
    source = tmp_path / "models" / "train"
    for entry in manifest.files:
        if entry.path == "pair_dictionary.json":
            continue
        assert (dest / entry.path).read_bytes() == (source / entry.path).read_bytes()
    dictionary = json.loads((dest / "pair_dictionary.json").read_text())
    assert dictionary["BTC/USDT"]["data_path"] == f"sub-train-BTC_{TS}"  # relative to the bundle, not the trainer
    assert bundle.read_manifest(dest) == manifest


def test_pack_refuses_a_folder_without_a_model_of_a_pair(tmp_path: Path) -> None:
    folder = fake_model_dir(tmp_path)
    (folder / f"sub-train-ETH_{TS}" / f"cb_eth_{TS}_label_pipeline.pkl").unlink()
    with pytest.raises(bundle.BundleError, match="lacks"):
        pack_fake(folder, tmp_path / "b.tar.zst")
    with pytest.raises(bundle.BundleError, match="no trained model for XRP/USDT"):
        pack_bundle(
            folder,
            tmp_path / "c.tar.zst",
            freqai_model="LightGBMRegressor",
            timeframe="5m",
            freqai={},
            trained_from=FROM,
            trained_to=TO,
            pairs=["XRP/USDT"],
        )
    with pytest.raises(UnknownModel):
        pack_bundle(
            folder,
            tmp_path / "d.tar.zst",
            freqai_model="PyTorchMLPRegressor",
            timeframe="5m",
            freqai={},
            trained_from=FROM,
            trained_to=TO,
        )


# ------------------------------------------------------------------------------------------ signatures


def test_a_signature_binds_model_id_version_sha256_and_size(packed: bundle.PackedBundle) -> None:
    key = Ed25519PrivateKey.generate()
    model_id = uuid.uuid4()
    facts = {"model_id": model_id, "version": 3, "sha256": packed.sha256, "size": packed.size}
    signature = sign_bundle(key, **facts)
    verify_signature([Ed25519PrivateKey.generate().public_key(), key.public_key()], signature, **facts)
    changed = [
        {**facts, "model_id": uuid.uuid4()},
        {**facts, "version": 4},
        {**facts, "sha256": "0" * 64},
        {**facts, "size": packed.size - 1},
    ]
    for other in changed:
        with pytest.raises(SignatureInvalid, match="does not verify"):
            verify_signature([key.public_key()], signature, **other)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_signature([Ed25519PrivateKey.generate().public_key()], signature, **facts)
    with pytest.raises(SignatureInvalid, match="not Base64"):
        verify_signature([key.public_key()], "%%%" + signature, **facts)
    with pytest.raises(SignatureInvalid, match="not the 64 of an Ed25519"):
        verify_signature([key.public_key()], base64.b64encode(b"short").decode(), **facts)
    with pytest.raises(SignatureInvalid, match="no model-signing public key"):
        verify_signature([], signature, **facts)


def test_the_signed_message_is_fixed_text() -> None:
    model_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    message = bundle.signing_message(model_id=model_id, version=2, sha256="a" * 64, size=10)
    assert message == (
        b"freqfleet.model-bundle.v1\nmodel_id=12345678-1234-5678-1234-567812345678\nversion=2\n"
        + b"sha256="
        + b"a" * 64
        + b"\nsize=10\n"
    )


# ------------------------------------------------------------------------------------------ decompression


def test_one_byte_changed_after_signing_is_refused(tmp_path: Path, packed: bundle.PackedBundle) -> None:
    tar = zstd_decompress(packed.path.read_bytes())
    tampered = zstd(flip_byte(tar, len(tar) // 2))
    with pytest.raises(HashMismatch, match=r"not the \w+ that was signed"):
        unpack(tampered, packed.sha256, packed.size, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    corrupt = flip_byte(packed.path.read_bytes(), packed.compressed_size // 2)  # the zstd stream itself
    with pytest.raises((BadEncoding, HashMismatch)):
        unpack(corrupt, packed.sha256, packed.size, tmp_path / "y")


def test_a_declared_size_that_is_wrong_is_refused(packed: bundle.PackedBundle) -> None:
    data = packed.path.read_bytes()
    with pytest.raises(SizeExceeded, match="more than its declared"):
        decompress_verified(io.BytesIO(data), io.BytesIO(), sha256=packed.sha256, size=packed.size - 1)
    with pytest.raises(HashMismatch, match="decompresses to"):
        decompress_verified(io.BytesIO(data), io.BytesIO(), sha256=packed.sha256, size=packed.size + 1)
    with pytest.raises(SizeExceeded, match="at most 1000"):
        decompress_verified(io.BytesIO(data), io.BytesIO(), sha256=packed.sha256, size=packed.size, max_size=1000)
    with pytest.raises(BadEncoding, match="not valid zstd"):
        decompress_verified(io.BytesIO(b"plain bytes" * 10), io.BytesIO(), sha256="0" * 64, size=100)


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(memoryview(data))  # type: ignore[arg-type]
        self.count += size
        return size


def test_a_decompression_bomb_stops_at_the_declared_size() -> None:
    bomb = zstd(bytes(512 * 1024 * 1024))  # 512 MiB of zeros in a few KiB
    assert len(bomb) < 100_000
    sink = CountingSink()
    with pytest.raises(SizeExceeded, match="decompression bomb"):
        decompress_verified(io.BytesIO(bomb), sink, sha256="0" * 64, size=1024 * 1024)
    assert sink.count <= 1024 * 1024  # nothing beyond the declared size was written


def test_compression_none_is_checked_the_same_way(packed: bundle.PackedBundle) -> None:
    tar = zstd_decompress(packed.path.read_bytes())
    out = io.BytesIO()
    decompress_verified(io.BytesIO(tar), out, sha256=packed.sha256, size=packed.size, compression="none")
    assert out.getvalue() == tar
    with pytest.raises(HashMismatch):
        decompress_verified(
            io.BytesIO(flip_byte(tar, 700)), io.BytesIO(), sha256=packed.sha256, size=packed.size, compression="none"
        )


# ------------------------------------------------------------------------------------------ archive contents


def manifest_for(files: dict[str, bytes]) -> bytes:
    entries = [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in sorted(files.items())]
    name = f"cb_btc_{TS}"
    manifest = {
        "format": "freqfleet-model-bundle/1",
        "identifier": "train",
        "freqai_model": "LightGBMRegressor",
        "timeframe": "5m",
        "freqai": {},
        "pairs": {
            "BTC/USDT": {
                "folder": f"sub-train-BTC_{TS}",
                "model_filename": name,
                "trained_timestamp": TS,
                "features": ["%-a"],
                "labels": ["&-s_close"],
            }
        },
        "trained_from": FROM.isoformat(),
        "trained_to": TO.isoformat(),
        "files": entries,
    }
    return json.dumps(manifest).encode()


def valid_files() -> dict[str, bytes]:
    name = f"sub-train-BTC_{TS}/cb_btc_{TS}"
    files = {f"{name}_{kind}": os.urandom(100) for kind in bundle.LIVE_FILE_KINDS}
    files["pair_dictionary.json"] = b"{}"
    return files


def extract_tar(tmp_path: Path, data: bytes) -> bundle.Manifest:
    path = tmp_path / "in.tar"
    path.write_bytes(data)
    return extract_bundle(path, tmp_path / "out")


def test_a_hand_made_valid_archive_extracts(tmp_path: Path) -> None:
    files = valid_files()
    manifest = extract_tar(tmp_path, tar_of({"manifest.json": manifest_for(files), **files}))
    assert manifest.pairs["BTC/USDT"].model_filename == f"cb_btc_{TS}"


@pytest.mark.parametrize(
    ("extra", "links", "message"),
    [
        ({"../escape.txt": b"x"}, None, "path outside the model folder"),
        ({"/etc/evil": b"x"}, None, "path outside the model folder"),
        ({f"sub-train-BTC_{TS}/../../up.txt": b"x"}, None, "path outside the model folder"),
        ({f"sub-train-BTC_{TS}/cb_btc_{TS}_trained_df.pkl": b"x"}, None, "unexpected file"),
        ({"run.sh": b"x"}, None, "unexpected file"),
        ({}, {f"sub-train-BTC_{TS}/cb_btc_{TS}_model.joblib.link": "/etc/passwd"}, "link"),
    ],
)
def test_unsafe_archives_are_refused(
    tmp_path: Path, extra: dict[str, bytes], links: dict[str, str] | None, message: str
) -> None:
    files = valid_files()
    data = tar_of({"manifest.json": manifest_for(files), **files, **extra}, links=links)
    with pytest.raises(UnsafeArchive, match=message):
        extract_tar(tmp_path, data)
    assert not (tmp_path / "out").exists()  # nothing left behind
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()


def test_devices_folders_and_duplicates_are_refused(tmp_path: Path) -> None:
    for kind, message in ((tarfile.CHRTYPE, "device"), (tarfile.DIRTYPE, "folder")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(f"sub-train-BTC_{TS}")
            info.type = kind
            tar.addfile(info)
        with pytest.raises(UnsafeArchive, match=message):
            extract_tar(tmp_path, buffer.getvalue())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for _ in range(2):
            info = tarfile.TarInfo("pair_dictionary.json")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(UnsafeArchive, match="twice"):
        extract_tar(tmp_path, buffer.getvalue())


def test_contents_must_match_the_manifest(tmp_path: Path) -> None:
    files = valid_files()
    manifest = manifest_for(files)
    changed = dict(files)
    changed[f"sub-train-BTC_{TS}/cb_btc_{TS}_model.joblib"] = os.urandom(100)
    with pytest.raises(HashMismatch, match="does not match its manifest"):
        extract_tar(tmp_path, tar_of({"manifest.json": manifest, **changed}))
    missing = dict(files)
    del missing[f"sub-train-BTC_{TS}/cb_btc_{TS}_label_pipeline.pkl"]
    with pytest.raises(UnsafeArchive, match="missing from the archive"):
        extract_tar(tmp_path, tar_of({"manifest.json": manifest, **missing}))
    unlisted = dict(files)
    unlisted[f"sub-train-ETH_{TS}/cb_eth_{TS}_model.joblib"] = b"x"
    with pytest.raises(UnsafeArchive, match="does not list"):
        extract_tar(tmp_path, tar_of({"manifest.json": manifest, **unlisted}))
    with pytest.raises(BadEncoding, match=r"no manifest\.json"):
        extract_tar(tmp_path, tar_of(files))
    with pytest.raises(BadEncoding, match="manifest is not valid"):
        extract_tar(tmp_path, tar_of({"manifest.json": b'{"format": "other"}', **files}))
    with pytest.raises(BadEncoding, match="not a valid tar"):
        extract_tar(tmp_path, b"this is not a tar archive at all" * 40)


def test_library_versions_that_differ_are_named(packed: bundle.PackedBundle) -> None:
    assert bundle.version_mismatches(packed.manifest) == []
    other = dict(packed.manifest.versions, **{"scikit-learn": "0.1"})
    assert bundle.version_mismatches(packed.manifest.model_copy(update={"versions": other})) == [
        f"scikit-learn 0.1 (here {packed.manifest.versions['scikit-learn']})"
    ]


# ------------------------------------------------------------------------------------------ catalog


def test_every_allowed_model_has_its_freqfleet_class() -> None:
    import ast

    source = (FREQAIMODELS_DIR / "freqfleet_models.py").read_text()
    classes = {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    assert classes == {freqfleet_class(name) for name in ALLOWED_MODELS}
    assert sorted(p.name for p in FREQAIMODELS_DIR.glob("*.py")) == ["__init__.py", "freqfleet_models.py"]
