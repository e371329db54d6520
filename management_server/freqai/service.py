"""The model registry: training requests, versions, registering bundles (trained or uploaded), visibility.

A version row is made when a training is requested (``queued``); the worker's task (``tasks.py``) moves it to
``running`` and then ``succeeded`` (bundle registered) or ``failed`` (reason and log tail). An upload of an
externally trained bundle is checked like a received one (bounded decompression, safe unpacking, manifest,
sizes, library versions) and registered as a succeeded version at once. Either way the registered bundle is
a zstd-compressed tar in the format of :mod:`shared.freqai.bundle`, encrypted in the model store.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import zstandard
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.auth.principals import UserFacts
from management_server.errors import Refused
from management_server.freqai.models import ModelSource, ModelStatus, ModelVersion
from management_server.freqai.schemas import TrainIn
from management_server.freqai.store import ModelStore, StoredBundle
from management_server.strategies import service as strategies
from management_server.strategies.models import StrategyStatus
from management_server.users.models import User
from management_server.users.viewer import Viewer
from shared.freqai.bundle import (
    BLOCK,
    COMPRESSION_LEVEL,
    MAX_WINDOW_SIZE,
    BadEncoding,
    BundleError,
    Manifest,
    SizeExceeded,
    extract_bundle,
    version_mismatches,
)
from shared.freqai.training import TrainingRequest, TrainingResult, validate_request

EXAMPLE_STRATEGY = Path(__file__).resolve().parents[2] / "examples" / "strategies" / "FreqaiExample.py"
EXAMPLE_CLASS = "FreqaiExample"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_TF_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}


class ModelRefused(Refused):
    """A request about models that can't be served as it is; ``status`` is the HTTP status to answer."""


# ----------------------------------------------------------------------------------------- reading


async def visible(
    session: AsyncSession, viewer: Viewer, model_id: uuid.UUID, *, for_update: bool = False
) -> ModelVersion | None:
    """The version if this viewer may see it (their own, or any for an admin)."""
    model = await session.get(ModelVersion, model_id, with_for_update=for_update)
    if model is None or not viewer.may_see(model.owner_id):
        return None
    return model


async def list_visible(
    session: AsyncSession,
    viewer: Viewer,
    status: ModelStatus | None,
    name: str | None,
    limit: int,
    offset: int,
) -> list[ModelVersion]:
    """The viewer's model versions (an admin: everyone's), of this status and name (None: any), newest first."""
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id)
    if not viewer.admin:
        query = query.where(ModelVersion.owner_id == viewer.user.id)
    if status is not None:
        query = query.where(ModelVersion.status == status.value)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    rows = await session.execute(query.limit(limit).offset(offset))
    return list(rows.scalars())


def describe(model: ModelVersion) -> str:
    return f"model {model.name!r} version {model.version} ({model.id})"


# ----------------------------------------------------------------------------------------- training requests


def example_source() -> str:
    try:
        return EXAMPLE_STRATEGY.read_text(encoding="utf-8")
    except OSError:
        raise ModelRefused(
            503, f"The shipped example strategy is not installed on this server ({EXAMPLE_STRATEGY}): give strategy_id."
        ) from None


def default_end(now: datetime, holdout_hours: float, timeframe: str) -> datetime:
    """``now`` less the holdout, down to a whole candle of ``timeframe``."""
    seconds = int(timeframe[:-1]) * _TF_SECONDS[timeframe[-1]]
    latest = int((now - timedelta(hours=holdout_hours)).timestamp())
    return datetime.fromtimestamp(latest - latest % seconds, UTC)


async def _lock_name(session: AsyncSession, owner_id: uuid.UUID, name: str) -> None:
    """Serialise version numbering of one (owner, name) until the transaction ends."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"model-name:{owner_id}:{name}"}
    )


async def next_version(session: AsyncSession, owner_id: uuid.UUID, name: str) -> int:
    await _lock_name(session, owner_id, name)
    current = await session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.owner_id == owner_id, ModelVersion.name == name)
    )
    return int(current or 0) + 1


async def queue_training(
    session: AsyncSession, viewer: Viewer, body: TrainIn, *, max_active: int, now: datetime | None = None
) -> ModelVersion:
    """A ``queued`` version for ``body`` (flushed; the caller commits, then sends the task).

    :raises ModelRefused: no such strategy (404), not approved (409), a request that can't be trained (400),
        too many trainings of this user under way (409).
    """
    now = now or datetime.now(UTC)
    if body.strategy_id is None:
        source, class_name, strategy_id = example_source(), EXAMPLE_CLASS, None
    else:
        strategy = await strategies.visible(session, viewer, body.strategy_id)
        if strategy is None:
            raise ModelRefused(404, "No such strategy.")
        if strategy.status != StrategyStatus.approved:
            raise ModelRefused(
                409,
                f"The strategy {strategy.name!r} is {strategy.status.replace('_', ' ')}: an admin must approve it "
                "first (the training runs its code).",
            )
        source, class_name, strategy_id = strategy.source, strategy.class_name, strategy.id
    end = body.end or default_end(now, body.holdout_hours, body.timeframe)
    request = TrainingRequest(
        strategy_source=source,
        strategy_class=class_name,
        pairs=list(body.pairs),
        timeframe=body.timeframe,
        end=end,
        days=body.days,
        freqai=body.freqai,
        freqai_model=body.freqai_model,
        holdout_hours=body.holdout_hours,
    )
    try:
        validate_request(request, now)
    except ValueError as exc:
        raise ModelRefused(400, f"This training can't run: {exc}.") from None
    active = await session.scalar(
        select(func.count())
        .select_from(ModelVersion)
        .where(
            ModelVersion.owner_id == viewer.id,
            ModelVersion.status.in_([ModelStatus.queued.value, ModelStatus.running.value]),
        )
    )
    if (active or 0) >= max_active:
        raise ModelRefused(
            409, f"You have {active} trainings queued or running (at most {max_active}): wait for one to finish."
        )
    name = body.name or class_name
    model = ModelVersion(
        owner_id=viewer.id,
        name=name,
        version=await next_version(session, viewer.id, name),
        source=ModelSource.training.value,
        status=ModelStatus.queued.value,
        strategy_id=strategy_id,
        strategy_class=class_name,
        strategy_source=source,
        strategy_sha256=hashlib.sha256(source.encode()).hexdigest(),
        exchange=body.exchange,
        freqai_model=body.freqai_model,
        pairs=list(body.pairs),
        timeframe=body.timeframe,
        trained_from=request.start.astimezone(UTC),
        trained_to=end.astimezone(UTC),
        holdout_hours=body.holdout_hours,
        freqai=body.freqai,
        attempts=0,
    )
    session.add(model)
    await session.flush()
    return model


def training_request(model: ModelVersion) -> TrainingRequest:
    """What the worker trains for a queued version."""
    if model.strategy_source is None or model.strategy_class is None:
        raise ValueError(f"{describe(model)} has no strategy to train (an upload?)")
    return TrainingRequest(
        strategy_source=model.strategy_source,
        strategy_class=model.strategy_class,
        pairs=list(model.pairs),
        timeframe=model.timeframe,
        end=model.trained_to,
        days=round((model.trained_to - model.trained_from).total_seconds() / 86400),
        freqai=dict(model.freqai),
        freqai_model=model.freqai_model,
        holdout_hours=model.holdout_hours if model.holdout_hours is not None else 6.0,
    )


# ----------------------------------------------------------------------------------------- registering


def _register(model: ModelVersion, manifest: Manifest, sha256: str, size: int, stored: StoredBundle) -> None:
    first = next(iter(manifest.pairs.values()))
    model.status = ModelStatus.succeeded.value
    model.sha256 = sha256
    model.size = size
    model.compressed_size = stored.plain_size
    model.store_key_id = stored.key_id
    model.identifier = manifest.identifier
    model.freqai_model = manifest.freqai_model
    model.timeframe = manifest.timeframe
    model.pairs = list(manifest.pairs)
    model.features = {pair: list(entry.features) for pair, entry in manifest.pairs.items()}
    model.labels = list(first.labels)
    model.metrics = dict(manifest.metrics)
    model.library_versions = dict(manifest.versions)
    model.freqai = dict(manifest.freqai)
    model.trained_from = manifest.trained_from.astimezone(UTC)
    model.trained_to = manifest.trained_to.astimezone(UTC)
    model.finished_at = datetime.now(UTC)
    model.error = None
    model.log_tail = None


def register_trained(
    model: ModelVersion, result: TrainingResult, manifest: Manifest, sha256: str, size: int, stored: StoredBundle
) -> None:
    """Mark a training's version succeeded with its stored bundle (the caller holds the row's lock and commits)."""
    _register(model, manifest, sha256, size, stored)
    model.progress = {"step": "done", "pairs_done": len(result.pairs), "pairs_total": len(result.pairs), "fraction": 1}


@dataclass(frozen=True)
class CheckedBundle:
    """An uploaded bundle that passed every check: its tar (in the work folder), hash, size, manifest."""

    tar: Path
    sha256: str
    size: int
    manifest: Manifest


def _copy_bounded(reader: BinaryIO, out: BinaryIO, max_size: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while block := reader.read(BLOCK):
        size += len(block)
        if size > max_size:
            raise SizeExceeded(
                f"the bundle is larger than {max_size} bytes uncompressed (FREQFLEET_MODEL_MAX_BUNDLE_BYTES): "
                "refused before it was unpacked"
            )
        digest.update(block)
        out.write(block)
    return digest.hexdigest(), size


def check_upload(upload: Path, workdir: Path, *, max_size: int) -> CheckedBundle:
    """Check an uploaded bundle (zstd-compressed tar, or a plain tar) as a gateway checks a received one.

    Decompression stops at ``max_size`` bytes (a decompression bomb is refused there, the zstd window is capped);
    the tar is unpacked into a temporary folder with :func:`shared.freqai.bundle.extract_bundle` (only regular
    files with the expected names, nothing outside the folder, every file as the manifest says, an allowed
    model class), and the libraries it was trained with must be this installation's (its pickles carry their
    objects). The unpacked copy is removed; the verified tar stays in ``workdir``.

    :raises BundleError: what is wrong, in words a person can act on.
    """
    tar = workdir / "bundle.tar"
    with upload.open("rb") as source, tar.open("wb") as out:
        compressed = source.read(4) == ZSTD_MAGIC
        source.seek(0)
        if compressed:
            decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
            try:
                with decompressor.stream_reader(source, read_across_frames=True, closefd=False) as reader:
                    sha256, size = _copy_bounded(reader, out, max_size)
            except zstandard.ZstdError as exc:
                raise BadEncoding(f"the bundle is not valid zstd data ({exc})") from None
        else:
            sha256, size = _copy_bounded(source, out, max_size)
    unpacked = workdir / "unpacked"
    manifest = extract_bundle(tar, unpacked)  # removes what it unpacked when it refuses
    shutil.rmtree(unpacked, ignore_errors=True)
    mismatches = version_mismatches(manifest)
    if mismatches:
        raise BundleError(
            "the bundle was trained with other library versions than this installation runs, and its pickles "
            f"carry their objects: {'; '.join(mismatches)}. Train it with the same versions."
        )
    return CheckedBundle(tar, sha256, size, manifest)


def store_checked(store: ModelStore, model_id: uuid.UUID, checked: CheckedBundle) -> StoredBundle:
    """Compress the verified tar (zstd, as the training packs it) into the store as ``model_id``'s bundle."""
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, write_checksum=True)
    with checked.tar.open("rb") as tar, compressor.stream_reader(tar, size=checked.size) as reader:
        return store.put(model_id, reader)


async def register_upload(
    session: AsyncSession,
    user: User | UserFacts,
    store: ModelStore,
    checked: CheckedBundle,
    *,
    name: str | None,
    strategy_class: str | None,
) -> ModelVersion:
    """A succeeded version for a checked upload, its bundle stored (flushed; the caller commits)."""
    manifest = checked.manifest
    chosen = name or f"upload-{manifest.identifier}"[:100]
    model_id = uuid.uuid4()
    stored = await asyncio.to_thread(store_checked, store, model_id, checked)
    model = ModelVersion(
        id=model_id,
        owner_id=user.id,
        name=chosen,
        version=await next_version(session, user.id, chosen),
        source=ModelSource.upload.value,
        status=ModelStatus.running.value,
        strategy_class=strategy_class,
        exchange=None,
        freqai_model=manifest.freqai_model,
        pairs=list(manifest.pairs),
        timeframe=manifest.timeframe,
        trained_from=manifest.trained_from,
        trained_to=manifest.trained_to,
        freqai=dict(manifest.freqai),
        attempts=0,
    )
    _register(model, manifest, checked.sha256, checked.size, stored)
    model.started_at = model.finished_at
    session.add(model)
    try:
        await session.flush()
    except BaseException:
        store.delete(model_id)
        raise
    return model


def upload_workdir(store: ModelStore) -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder in the store (same disk, same rights) for checking an upload."""
    store.ensure_root()
    uploads = store.root / ".uploads"
    uploads.mkdir(exist_ok=True, mode=0o700)
    return tempfile.TemporaryDirectory(prefix="upload-", dir=uploads)


# ----------------------------------------------------------------------------------------- bots


def fit_problem(model: ModelVersion, *, timeframe: str, pairs: list[str], strategy_class: str | None) -> str | None:
    """Why ``model`` can't serve a bot of this timeframe, pairs and strategy (None: it can)."""
    if model.status != ModelStatus.succeeded:
        return f"{describe(model)} is {model.status}: only a trained (succeeded) model can be deployed"
    if model.timeframe != timeframe:
        return f"{describe(model)} was trained on {model.timeframe} candles; the bot trades {timeframe}"
    missing = [p for p in pairs if p not in model.pairs]
    if missing:
        return f"{describe(model)} has no model for {', '.join(missing)} (it covers {', '.join(model.pairs)})"
    if model.strategy_class and strategy_class and model.strategy_class != strategy_class:
        return (
            f"{describe(model)} was trained for the strategy {model.strategy_class}; the bot runs {strategy_class}, "
            "whose features would not match"
        )
    return None
