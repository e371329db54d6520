"""The high-availability Compose file (``docker-compose.ha.yml`` over ``docker-compose.yml``), checked without an
engine: merged the way Compose merges an override, every service it adds runs with a health check, the scripts
and configuration it mounts exist, no secret is written in it, and each Freqfleet container gets settings that
reach the Sentinels, both PostgreSQL servers and, for the gateway, the proxy in front of both management replicas.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from management_server.config import normalize_database_url
from shared.redis import parse_sentinel_url
from tests.test_deploy_files import (
    FAKE_SHELL_ENV,
    ROOT,
    SECRET_KEY,
    SECRET_REFERENCE,
    container_env,
    environment,
    services,
)

HA_FILE = ROOT / "docker-compose.ha.yml"
SHELL = FAKE_SHELL_ENV | {"POSTGRES_REPLICATION_PASSWORD": "9f8e7d6c5b4a39281706f5e4d3c2b1a0"}
ADDED = {"postgres-standby", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "management-2", "proxy"}
SENTINELS = [("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)]


def _target(volume: Any) -> str:
    return str(volume).split(":")[1] if isinstance(volume, str) else str(volume["target"])


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Compose's override merge: mappings key by key, ``volumes`` by target, ``ports`` appended, the rest replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = copy.deepcopy(base)
        for name, value in over.items():
            merged[name] = merge(merged[name], value, name) if name in merged else copy.deepcopy(value)
        return merged
    if key == "volumes" and isinstance(base, list) and isinstance(over, list):
        kept = [v for v in base if _target(v) not in {_target(o) for o in over}]
        return kept + list(over)
    if key == "ports" and isinstance(base, list) and isinstance(over, list):
        return list(base) + list(over)
    return copy.deepcopy(over)


def ha_file() -> dict[str, Any]:
    data = yaml.safe_load(HA_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def ha_services() -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = merge(services(), ha_file()["services"])
    return merged


def settings_env(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FREQFLEET_") or key in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(key)
    for key, value in container_env(name, ha_services()[name], SHELL).items():
        monkeypatch.setenv(key, value)


def test_it_adds_what_high_availability_needs_with_health_checks() -> None:
    merged = ha_services()
    assert set(merged) - set(services()) == ADDED
    for name in ADDED:
        test = (merged[name].get("healthcheck") or {}).get("test")
        assert test, f"{name} runs for good but has no healthcheck"
        assert merged[name].get("restart") == "unless-stopped", name


def test_what_it_mounts_is_in_the_repository() -> None:
    for name, service in ha_file()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                path = ROOT / source
                assert path.is_file(), f"{name} mounts {source}, which is not in the repository"
                if path.suffix == ".sh":
                    assert path.read_text().startswith("#!/bin/sh\n"), f"{source}: a POSIX sh script"


def test_no_literal_secrets() -> None:
    problems = []
    for name, service in ha_file()["services"].items():
        for key, value in environment(service).items():
            if value is not None and SECRET_KEY.search(key) and not SECRET_REFERENCE.match(value):
                problems.append(f"{name}: {key}")
    data = ha_file()
    for url in (data["x-ha-redis-url"], data["x-ha-database-url"]):
        shown = re.sub(r"\$\{[^}]*\}", "REF", url)  # every ${...} reference, required or not
        passwords = re.findall(r"://[^@/]*:([^@]+)@", shown) + re.findall(r"sentinel_password=([^&]+)", shown)
        assert passwords, url
        problems += [f"a literal password in {shown}" for p in passwords if p != "REF"]
        assert ":-" not in url, "a secret may not have a default"
    assert not problems, problems


@pytest.mark.parametrize("name", ["migrate", "management", "management-2", "worker"])
def test_management_containers_reach_the_sentinels_and_both_databases(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from management_server.config import ManagementSettings

    settings_env(name, monkeypatch)
    settings = ManagementSettings()
    assert settings.env.value == "production"
    sentinel = parse_sentinel_url(settings.redis_url.get_secret_value())
    assert sentinel is not None
    assert (sentinel.sentinels, sentinel.service, sentinel.db) == (SENTINELS, "freqfleet", 0)
    assert sentinel.password == sentinel.sentinel_password == SHELL["VALKEY_PASSWORD"]
    url = normalize_database_url(settings.database_url.get_secret_value())
    assert "host=postgres:5432" in url
    assert "host=postgres-standby:5432" in url
    assert "target_session_attrs=read-write" in url
    proxy = ha_services()["proxy"]["networks"]["default"]["ipv4_address"]
    assert settings.trusted_proxies == [proxy]  # X-Forwarded-For believed from the proxy only


def test_the_gateway_goes_through_sentinel_and_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from trading_gateway.config import GatewaySettings

    settings_env("gateway", monkeypatch)
    settings = GatewaySettings()
    sentinel = parse_sentinel_url(settings.redis_url.get_secret_value())
    assert sentinel is not None
    assert sentinel.sentinels == SENTINELS
    assert settings.management_url == "http://proxy:8080"


def test_the_proxy_spreads_over_both_replicas_and_the_sentinels_watch_the_primary() -> None:
    merged = ha_services()
    conf = (ROOT / "deploy/nginx/management.conf").read_text()
    upstreams = re.findall(r"^\s*server ([\w-]+):8000\b", conf, flags=re.MULTILINE)
    assert sorted(upstreams) == ["management", "management-2"]
    assert all(name in merged for name in upstreams)
    assert "listen 8080;" in conf
    assert any(str(p).endswith(":8080:8080") for p in merged["proxy"]["ports"])
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf  # set, not appended: a client can't add one
    script = (ROOT / "deploy/valkey/sentinel.sh").read_text()
    assert "sentinel monitor freqfleet redis 6379 2" in script  # the URL's service name, quorum 2 of 3
    replica = merged["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 : replica.index("--replicaof") + 3] == ["redis", "6379"]
    assert "--masterauth" in merged["redis"]["command"]  # the old primary can follow the promoted one


def test_the_standby_copies_the_primary_with_the_replication_role() -> None:
    primary = (ROOT / "deploy/postgres/primary-replication.sh").read_text()
    standby = (ROOT / "deploy/postgres/standby.sh").read_text()
    assert "CREATE ROLE replicator WITH REPLICATION" in primary
    assert "host replication replicator" in primary
    assert "--username=replicator" in standby
    assert "--write-recovery-conf" in standby  # standby.signal and primary_conninfo: it starts as a standby
    merged: Mapping[str, Any] = ha_services()
    targets = [_target(v) for v in merged["postgres"]["volumes"]]
    assert "/docker-entrypoint-initdb.d/10-replication.sh" in targets
    assert "/var/lib/postgresql" in targets  # the base file's data volume is kept
    assert Path(ROOT / "deploy/postgres/standby.sh").stat().st_mode & 0o111
