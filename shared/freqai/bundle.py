"""FreqAI model bundles: what a live bot needs, packed, compressed, signed, and unpacked with care.

**Contents.** A bundle is a tar of, per pair, the four files a live bot reads from its
``sub-train-<BASE>_<ts>/`` folder (``<name>_model.joblib``, ``<name>_metadata.json``,
``<name>_feature_pipeline.pkl``, ``<name>_label_pipeline.pkl``; not the training frames
``_trained_df.pkl`` / ``_trained_dates_df.pkl``, which a live bot never reads), Freqtrade's
``pair_dictionary.json`` (``data_path`` made relative to the bundle), and ``manifest.json``
(:class:`Manifest`): format, FreqAI model class, timeframe, the ``freqai`` section it was trained with,
per pair its folder, file name, training timestamp, features and labels, the trained range, metrics, the
library versions of the trainer, and every file's size and sha256.

**Deterministic.** Members sorted by name, ``manifest.json`` first; mtime 0, owner 0/0 without names,
mode 0644, USTAR. The same model folder and description give the same bytes, so the same sha256.

**Compressed** with zstd (level :data:`COMPRESSION_LEVEL`, one thread, checksummed frames), streamed: memory
stays bounded whatever the size. The sha256 and size in the bus message are those of the *uncompressed*
tar.

**Signed.** Ed25519 over :func:`signing_message`, a fixed text binding the model id, the version, the
sha256 and the size (so a signature can't be moved to another version, and a valid bundle can't be
truncated or swapped). The management server signs; a gateway verifies with the public keys the management
server publishes, *before* it decompresses anything.

**Unpacked with care** (the files are unpickled by Freqtrade: loading untrusted bytes runs code):

1. :func:`decompress_verified` streams the compressed bytes into a tar file, refusing more output than the
   declared size (itself at most ``max_size``: a decompression bomb stops there, before it fills memory or
   disk; the zstd window is capped too), then compares size and sha256 with the signed ones;
2. :func:`extract_bundle` reads that verified tar: only regular files, only the expected names (no
   absolute paths, no ``..``, no links, devices or folders), no duplicates, each file's size and sha256
   as the manifest says, and exactly the manifest's files.

Every refusal is a :class:`BundleError` (one subclass per kind) whose message says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Literal

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.freqai.catalog import check_model

BUNDLE_FORMAT = "freqfleet-model-bundle/1"
MANIFEST = "manifest.json"
PAIR_DICTIONARY = "pair_dictionary.json"
LIVE_FILE_KINDS: tuple[str, ...] = ("model.joblib", "metadata.json", "feature_pipeline.pkl", "label_pipeline.pkl")
SIGNATURE_CONTEXT = "freqfleet.model-bundle.v1"
COMPRESSION_LEVEL = 6
DEFAULT_MAX_SIZE = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_WINDOW_SIZE = 64 * 1024 * 1024  # zstd window a decompressor accepts (bounds its memory)
BLOCK = 1024 * 1024
LIBRARIES: tuple[str, ...] = (
    "freqtrade",
    "lightgbm",
    "xgboost-cpu",
    "scikit-learn",
    "datasieve",
    "pandas",
    "numpy",
    "cloudpickle",
    "joblib",
    "pyarrow",
)
"""Libraries whose objects the pickles carry: trainer and bots must run the same versions."""

_FOLDER = r"sub-train-[A-Z0-9]{1,20}_\d{9,11}"
_FILE_NAME = r"cb_[a-z0-9]{1,20}_\d{9,11}"
_MEMBER = re.compile(
    rf"^(?P<folder>{_FOLDER})/(?P<name>{_FILE_NAME})_(?P<kind>model\.joblib|metadata\.json|feature_pipeline\.pkl|"
    r"label_pipeline\.pkl)$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------------------- errors


class BundleError(ValueError):
    """A bundle that is refused; the message says why, in words a person can act on."""


class SignatureInvalid(BundleError):
    """The signature is not one of the management server's keys over this model id, version, sha256, size."""


class HashMismatch(BundleError):
    """The bytes are not the ones that were signed (sha256 or size differ)."""


class SizeExceeded(BundleError):
    """Larger than allowed or than declared (a decompression bomb is one)."""


class UnsafeArchive(BundleError):
    """The tar holds something it must not (a path outside the model folder, a link, an unexpected file)."""


class BadEncoding(BundleError):
    """Not Base64, not zstd, not a tar, not a manifest."""


# ----------------------------------------------------------------------------------------- manifest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    path: str = Field(max_length=200)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256.pattern)


class PairEntry(_Strict):
    folder: str = Field(pattern=rf"^{_FOLDER}$")
    model_filename: str = Field(pattern=rf"^{_FILE_NAME}$")
    trained_timestamp: int = Field(ge=0)
    features: list[str] = Field(max_length=100_000)
    labels: list[str] = Field(max_length=1_000)


class Manifest(_Strict):
    """``manifest.json`` of a bundle."""

    format: Literal["freqfleet-model-bundle/1"] = "freqfleet-model-bundle/1"
    identifier: str = Field(max_length=200, description="The FreqAI identifier it was trained under.")
    freqai_model: str = Field(description="The FreqAI model class, e.g. LightGBMRegressor.")
    timeframe: str = Field(pattern=r"^[0-9]{1,3}[smhdwM]$")
    freqai: dict[str, Any] = Field(description="The freqai section it was trained with (features, labels).")
    pairs: dict[str, PairEntry] = Field(min_length=1)
    trained_from: AwareDatetime
    trained_to: AwareDatetime
    metrics: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    files: list[FileEntry]

    @property
    def features(self) -> list[str]:
        """The features of the first pair (the others have the same, named after their pair)."""
        return next(iter(self.pairs.values())).features


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """The installed versions of ``names`` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def version_mismatches(manifest: Manifest, installed: Mapping[str, str] | None = None) -> list[str]:
    """Libraries whose version in the manifest differs from ``installed`` (default: this environment)."""
    here = library_versions() if installed is None else installed
    return [
        f"{name} {theirs} (here {here[name]})"
        for name, theirs in sorted(manifest.versions.items())
        if name in here and here[name] != theirs
    ]


# ----------------------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackedBundle:
    """A packed bundle on disk: ``path`` holds the compressed bytes; ``sha256``/``size`` are the tar's."""

    path: Path
    sha256: str
    size: int
    compressed_size: int
    manifest: Manifest


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.count += len(view)
        self.target.write(view)
        return len(view)


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def pack_bundle(
    model_dir: Path,
    dest: Path,
    *,
    freqai_model: str,
    timeframe: str,
    freqai: Mapping[str, Any],
    trained_from: datetime,
    trained_to: datetime,
    metrics: Mapping[str, Any] | None = None,
    pairs: Sequence[str] | None = None,
    versions: Mapping[str, str] | None = None,
    level: int = COMPRESSION_LEVEL,
) -> PackedBundle:
    """Pack the live files of the trained models in ``model_dir`` into ``dest`` (zstd-compressed tar).

    :param model_dir: a FreqAI model folder (``user_data/models/<identifier>/``) with its
        ``pair_dictionary.json`` and ``sub-train-*`` folders.
    :param freqai_model: the FreqAI model class it was trained with (from the allowlist).
    :param freqai: the ``freqai`` section it was trained with (a receiving bot runs the same features).
    :param pairs: the pairs to take (default: every pair of ``pair_dictionary.json``).
    :param versions: library versions to record (default: this environment's, which trained it).
    :raises BundleError: the folder lacks a pair or one of its files.
    """
    check_model(freqai_model)
    try:
        index: Any = json.loads((model_dir / PAIR_DICTIONARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{model_dir} has no readable {PAIR_DICTIONARY} ({exc})") from None
    if not isinstance(index, dict):
        raise BundleError(f"{PAIR_DICTIONARY} of {model_dir} is not an object")
    chosen = list(index) if pairs is None else list(pairs)
    if not chosen:
        raise BundleError("a bundle needs at least one pair")
    entries: dict[str, PairEntry] = {}
    sources: dict[str, Path] = {}
    dictionary: dict[str, Any] = {}
    for pair in chosen:
        info = index.get(pair)
        if not isinstance(info, dict) or not info.get("model_filename"):
            raise BundleError(f"{model_dir} has no trained model for {pair}")
        folder = Path(str(info["data_path"])).name
        name = str(info["model_filename"])
        meta_path = model_dir / folder / f"{name}_metadata.json"
        try:
            meta: Any = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"the metadata of {pair}'s model is not readable ({exc})") from None
        try:
            entries[pair] = PairEntry(
                folder=folder,
                model_filename=name,
                trained_timestamp=int(info["trained_timestamp"]),
                features=[str(f) for f in meta.get("training_features_list", [])],
                labels=[str(label) for label in meta.get("label_list", [])],
            )
        except (ValidationError, TypeError, ValueError) as exc:
            raise BundleError(f"the model of {pair} is not one FreqAI saved ({exc})") from None
        for kind in LIVE_FILE_KINDS:
            member = f"{folder}/{name}_{kind}"
            source = model_dir / member
            if not source.is_file():
                raise BundleError(f"the model of {pair} lacks {member}")
            sources[member] = source
        dictionary[pair] = {
            "model_filename": name,
            "trained_timestamp": int(info["trained_timestamp"]),
            "data_path": folder,
            "extras": {},
        }
    dictionary_bytes = json.dumps(dictionary, sort_keys=True, separators=(",", ":")).encode()
    files = [
        FileEntry(path=PAIR_DICTIONARY, size=len(dictionary_bytes), sha256=hashlib.sha256(dictionary_bytes).hexdigest())
    ]
    for member in sorted(sources):
        digest, size = _sha256_of(sources[member])
        files.append(FileEntry(path=member, size=size, sha256=digest))
    manifest = Manifest(
        identifier=str(model_dir.name),
        freqai_model=freqai_model,
        timeframe=timeframe,
        freqai=json.loads(json.dumps(dict(freqai))),
        pairs=entries,
        trained_from=trained_from,
        trained_to=trained_to,
        metrics=json.loads(json.dumps(dict(metrics or {}))),
        versions=dict(library_versions() if versions is None else versions),
        files=sorted(files, key=lambda f: f.path),
    )
    manifest_bytes = manifest_json(manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as raw:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=0)
        with compressor.stream_writer(raw, closefd=False) as zwriter:
            hashing = _HashingWriter(zwriter)
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                tar.addfile(_tarinfo(MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
                for entry in manifest.files:
                    if entry.path == PAIR_DICTIONARY:
                        tar.addfile(_tarinfo(PAIR_DICTIONARY, entry.size), io.BytesIO(dictionary_bytes))
                        continue
                    with sources[entry.path].open("rb") as f:
                        tar.addfile(_tarinfo(entry.path, entry.size), f)
    return PackedBundle(
        path=dest,
        sha256=hashing.hash.hexdigest(),
        size=hashing.count,
        compressed_size=dest.stat().st_size,
        manifest=manifest,
    )


def manifest_json(manifest: Manifest) -> bytes:
    """The manifest as the bundle stores it (keys sorted: deterministic)."""
    return json.dumps(manifest.model_dump(mode="json"), sort_keys=True, indent=1).encode()


# ----------------------------------------------------------------------------------------- signing


def signing_message(*, model_id: uuid.UUID | str, version: int, sha256: str, size: int) -> bytes:
    """The exact bytes the management server signs for a bundle."""
    if not _SHA256.match(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    lines = (SIGNATURE_CONTEXT, f"model_id={uuid.UUID(str(model_id))}", f"version={int(version)}")
    return "\n".join((*lines, f"sha256={sha256}", f"size={int(size)}", "")).encode()


def sign_bundle(key: Ed25519PrivateKey, *, model_id: uuid.UUID | str, version: int, sha256: str, size: int) -> str:
    """The Base64 Ed25519 signature of :func:`signing_message` (what ``ModelBundle.signature`` carries)."""
    message = signing_message(model_id=model_id, version=version, sha256=sha256, size=size)
    return base64.b64encode(key.sign(message)).decode()


def verify_signature(
    keys: Iterable[Ed25519PublicKey],
    signature: str,
    *,
    model_id: uuid.UUID | str,
    version: int,
    sha256: str,
    size: int,
) -> None:
    """Return when one of ``keys`` signed these facts; else raise :class:`SignatureInvalid`."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("the signature is not Base64") from None
    if len(raw) != 64:
        raise SignatureInvalid(f"the signature is {len(raw)} bytes, not the 64 of an Ed25519 signature")
    try:
        message = signing_message(model_id=model_id, version=version, sha256=sha256, size=size)
    except ValueError as exc:
        raise SignatureInvalid(str(exc)) from None
    candidates = list(keys)
    if not candidates:
        raise SignatureInvalid("no model-signing public key is known, so no signature can be checked")
    for key in candidates:
        try:
            key.verify(raw, message)
        except InvalidSignature:
            continue
        return
    raise SignatureInvalid(
        "the signature does not verify with the management server's model-signing keys (a bundle signed by "
        "another key, or model id, version, sha256 or size changed after signing)"
    )


# ----------------------------------------------------------------------------------------- unpacking


def decompress_verified(
    source: BinaryIO,
    dest: BinaryIO,
    *,
    sha256: str,
    size: int,
    compression: Literal["zstd", "none"] = "zstd",
    max_size: int = DEFAULT_MAX_SIZE,
) -> None:
    """Decompress ``source`` into ``dest``: at most ``size`` bytes, and they must hash to ``sha256``.

    :raises SizeExceeded: ``size`` is above ``max_size``, or the data decompresses to more than ``size``
        (nothing beyond ``size`` bytes is ever written or held).
    :raises HashMismatch: fewer bytes than ``size``, or another sha256.
    :raises BadEncoding: not a zstd stream (or a corrupt one, or one whose window exceeds the cap).
    """
    if size > max_size:
        raise SizeExceeded(f"the bundle is {size} bytes uncompressed; this gateway takes at most {max_size}")
    digest = hashlib.sha256()
    count = 0
    reader: BinaryIO
    if compression == "zstd":
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
        reader = decompressor.stream_reader(source, read_across_frames=True, closefd=False)
    else:
        reader = source
    try:
        while True:
            block = reader.read(min(BLOCK, size - count + 1))
            if not block:
                break
            count += len(block)
            if count > size:
                raise SizeExceeded(
                    f"the bundle decompresses to more than its declared {size} bytes (a decompression bomb?): "
                    "refused before it was unpacked"
                )
            digest.update(block)
            dest.write(block)
    except zstandard.ZstdError as exc:
        raise BadEncoding(f"the bundle is not valid zstd data ({exc})") from None
    finally:
        if reader is not source:
            reader.close()
    if count != size:
        raise HashMismatch(f"the bundle decompresses to {count} bytes, not the {size} that were signed")
    actual = digest.hexdigest()
    if actual != sha256:
        raise HashMismatch(f"the bundle's sha256 is {actual}, not the {sha256} that was signed (changed in transit?)")


def _check_member(member: tarfile.TarInfo, seen: set[str]) -> str:
    name = member.name
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeArchive(f"the archive holds a path outside the model folder: {name!r}")
    if not member.isreg():
        kind = (
            "link"
            if member.issym() or member.islnk()
            else "device"
            if member.isdev()
            else "folder"
            if member.isdir()
            else "special file"
        )
        raise UnsafeArchive(f"the archive holds a {kind} ({name!r}); only regular files are allowed")
    if name not in (MANIFEST, PAIR_DICTIONARY) and not _MEMBER.match(name):
        raise UnsafeArchive(f"the archive holds an unexpected file {name!r}")
    if name in seen:
        raise UnsafeArchive(f"the archive holds {name!r} twice")
    seen.add(name)
    return name


def extract_bundle(tar_path: Path, dest: Path, *, max_members: int = 4 * 1000 + 2) -> Manifest:
    """Unpack a verified bundle tar into the new folder ``dest``; its manifest.

    :raises UnsafeArchive: a member that is not a regular file with an expected name, a duplicate, a
        file the manifest does not list (or lists otherwise), a listed file missing.
    :raises BadEncoding: not a tar, or no valid manifest.
    """
    dest.mkdir(mode=0o750)
    manifest: Manifest | None = None
    seen: set[str] = set()
    written: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            while (member := tar.next()) is not None:
                if len(seen) >= max_members:
                    raise UnsafeArchive(f"the archive holds more than {max_members} files")
                name = _check_member(member, seen)
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file
                if name == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise SizeExceeded(f"the manifest is {member.size} bytes (at most {MAX_MANIFEST_BYTES})")
                    data = stream.read()
                    try:
                        manifest = Manifest.model_validate_json(data)
                    except ValidationError as exc:
                        problems = "; ".join(
                            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:3]
                        )
                        raise BadEncoding(f"the bundle's manifest is not valid ({problems})") from None
                    (dest / MANIFEST).write_bytes(data)
                    continue
                target = dest / name
                target.parent.mkdir(mode=0o750, exist_ok=True)
                digest = hashlib.sha256()
                size = 0
                with target.open("xb") as out:
                    while block := stream.read(BLOCK):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
                target.chmod(0o640)
                written[name] = (size, digest.hexdigest())
    except tarfile.TarError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BadEncoding(f"the bundle is not a valid tar archive ({exc})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    try:
        if manifest is None:
            raise BadEncoding(f"the bundle has no {MANIFEST}")
        _check_contents(manifest, written)
    except BundleError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest


def _check_contents(manifest: Manifest, written: Mapping[str, tuple[int, str]]) -> None:
    listed = {f.path: f for f in manifest.files}
    for name, (size, digest) in written.items():
        entry = listed.get(name)
        if entry is None:
            raise UnsafeArchive(f"the archive holds {name!r}, which its manifest does not list")
        if entry.size != size or entry.sha256 != digest:
            raise HashMismatch(f"{name} does not match its manifest entry (size or sha256)")
    missing = sorted(set(listed) - set(written))
    if missing:
        raise UnsafeArchive(f"files of the manifest are missing from the archive: {', '.join(missing[:5])}")
    if PAIR_DICTIONARY not in listed:
        raise UnsafeArchive(f"the bundle has no {PAIR_DICTIONARY}")
    try:
        check_model(manifest.freqai_model)
    except ValueError as exc:
        raise UnsafeArchive(str(exc)) from None
    for pair, model in manifest.pairs.items():
        for kind in LIVE_FILE_KINDS:
            if f"{model.folder}/{model.model_filename}_{kind}" not in listed:
                raise UnsafeArchive(f"the model of {pair} lacks its {kind}")


def read_manifest(folder: Path) -> Manifest:
    """The manifest of an unpacked bundle."""
    path = folder / MANIFEST
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise SizeExceeded(f"{path} is too large")
    return Manifest.model_validate_json(path.read_bytes())
