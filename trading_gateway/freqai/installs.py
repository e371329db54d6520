"""A bot's installed models: the files its Freqtrade reads, and the gateway's record of them.

Installing a stored bundle for a bot copies the bundle's verified files into the bot's FreqAI folder
(``user_data/models/freqfleet/installed/<sha256>/``, see :mod:`shared.freqai.live`; a staging copy renamed
into place, owned by the bot's uid), then writes ``pair_dictionary.json`` (what Freqtrade reads when it
starts; absolute ``data_path`` into that copy) and then the install marker (what a running bot watches),
each with ``os.replace``: a reader sees the old file or the new one. A sandboxed bot reads its own folder
only: never the gateway's store, which holds every user's models. Copies of the last
:data:`KEEP_COPIES` versions stay (a rollback to them copies nothing).

The gateway's record is ``models.json`` in the bot's folder (:class:`BotModels`): every install, oldest
first, with its status (``pending`` until the bot acknowledges it, then ``loaded`` or ``failed``). The last
entry is what is installed now; rollbacks choose from the earlier ``loaded`` ones.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.files import atomic_write
from shared.freqai.live import (
    ACK_FILE,
    MARKER_FILE,
    PAIR_DICTIONARY,
    Ack,
    InstallMarker,
    PairInstall,
    models_folder,
    read_model,
    utcnow,
)
from shared.logging import get_logger
from trading_gateway.bots.files import BotFiles
from trading_gateway.freqai.store import StoredBundle

log = get_logger(__name__)

MODELS_FILE = "models.json"
HISTORY_KEPT = 50
INSTALLED_DIR = "installed"  # in the bot's FreqAI folder: its own copies of its installed bundles
KEEP_COPIES = 5


class InstallRecord(BaseModel):
    """One install of a model version for a bot."""

    model_config = ConfigDict(extra="ignore")

    install_id: uuid.UUID
    model_id: uuid.UUID
    version: int
    sha256: str
    freqai_model: str
    pairs: list[str]
    reason: Literal["start", "update", "rollback", "restore"]
    installed_at: AwareDatetime
    status: Literal["pending", "loaded", "failed"] = "pending"
    loaded_at: AwareDatetime | None = None
    load_seconds: float | None = None
    error: str | None = Field(default=None, max_length=2000)

    def describe(self) -> str:
        return f"model {self.model_id} version {self.version}"


class BotModels(BaseModel):
    """``models.json``: the bot's installs, oldest first (the last one is installed now)."""

    model_config = ConfigDict(extra="ignore")

    history: list[InstallRecord] = Field(default_factory=list)

    @property
    def current(self) -> InstallRecord | None:
        return self.history[-1] if self.history else None

    def loaded_before(self, record: InstallRecord) -> InstallRecord | None:
        """The newest loaded install before ``record`` (what the bot had in memory before it)."""
        index = next((i for i, r in enumerate(self.history) if r.install_id == record.install_id), len(self.history))
        return next((r for r in reversed(self.history[:index]) if r.status == "loaded"), None)

    def recent_versions(self, count: int) -> list[str]:
        """The sha256s of the last ``count`` distinct versions installed (the current one first)."""
        found: list[str] = []
        for record in reversed(self.history):
            if record.sha256 not in found:
                found.append(record.sha256)
            if len(found) >= count:
                break
        return found


def load(files: BotFiles) -> BotModels:
    path = files.meta / MODELS_FILE
    try:
        return BotModels.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return BotModels()
    except (ValidationError, ValueError) as exc:
        log.error("bot's model record unreadable; starting a new one", path=str(path), error=str(exc)[:300])
        return BotModels()


def save(files: BotFiles, state: BotModels) -> None:
    files.prepare()
    state.history = state.history[-HISTORY_KEPT:]
    atomic_write(files.meta / MODELS_FILE, state.model_dump_json(indent=1).encode())


def new_record(
    stored: StoredBundle,
    *,
    model_id: uuid.UUID,
    version: int,
    reason: Literal["start", "update", "rollback", "restore"],
    now: datetime | None = None,
) -> InstallRecord:
    manifest = stored.manifest
    return InstallRecord(
        install_id=uuid.uuid4(),
        model_id=model_id,
        version=version,
        sha256=stored.sha256,
        freqai_model=manifest.freqai_model,
        pairs=sorted(manifest.pairs),
        reason=reason,
        installed_at=now or utcnow(),
    )


def write_install(files: BotFiles, stored: StoredBundle, record: InstallRecord) -> None:
    """Point the bot's FreqAI folder at ``stored``: ``pair_dictionary.json``, then the install marker."""
    folder = models_folder(files.user_data)
    files.prepare()
    files.make_dirs(folder)
    copy = _copy_bundle(files, folder, stored)
    pairs = {
        pair: PairInstall(
            model_filename=entry.model_filename,
            trained_timestamp=entry.trained_timestamp,
            data_path=str(copy / entry.folder),
        )
        for pair, entry in stored.manifest.pairs.items()
    }
    dictionary = {pair: {**entry.model_dump(), "extras": {}} for pair, entry in pairs.items()}
    files.write_file(folder / PAIR_DICTIONARY, json.dumps(dictionary, indent=1).encode())
    marker = InstallMarker(
        install_id=record.install_id,
        model_id=record.model_id,
        version=record.version,
        sha256=record.sha256,
        freqai_model=record.freqai_model,
        pairs=pairs,
        installed_at=record.installed_at,
    )
    files.write_file(folder / MARKER_FILE, marker.model_dump_json().encode())


def _copy_bundle(files: BotFiles, folder: Path, stored: StoredBundle) -> Path:
    """The bot's own copy of ``stored`` (made now unless it is there): staged, handed to the bot, renamed."""
    installed = folder / INSTALLED_DIR
    target = installed / stored.sha256
    if target.is_dir() and not target.is_symlink():
        return target
    files.make_dirs(installed)
    staging = installed / f".tmp-{uuid.uuid4().hex}"
    try:
        shutil.copytree(stored.folder, staging, symlinks=True)  # the store holds regular files only
        files.give_tree(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def prune_copies(files: BotFiles, state: BotModels) -> list[str]:
    """Remove the bot's copies of bundles older than its last :data:`KEEP_COPIES` versions; their sha256s."""
    keep: list[str] = []
    for record in reversed(state.history):
        if record.sha256 not in keep:
            keep.append(record.sha256)
    kept = set(keep[:KEEP_COPIES])
    installed = models_folder(files.user_data) / INSTALLED_DIR
    removed = []
    for entry in installed.iterdir() if installed.is_dir() and not installed.is_symlink() else []:
        if entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def clear_install(files: BotFiles) -> None:
    """No model: an empty ``pair_dictionary.json`` and no marker (the bot predicts nothing after a restart)."""
    folder = models_folder(files.user_data)
    if not folder.is_dir():
        return
    files.write_file(folder / PAIR_DICTIONARY, b"{}")
    (folder / MARKER_FILE).unlink(missing_ok=True)


def read_ack(files: BotFiles) -> Ack | None:
    return read_model(models_folder(files.user_data) / ACK_FILE, Ack)
