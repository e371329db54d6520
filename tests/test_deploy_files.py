"""The Docker ops path (Dockerfiles, docker-compose.yml, .dockerignore), checked without an engine.

There is no Docker engine where the tests run, so the files are parsed and checked against the
repository: what the images COPY exists and is not ignored, every image runs as a non-root user
with a health check and a pinned base, every long-running service has a health check, no
secret is written in the compose file, and the environment each container gets is one the
settings accept in production.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
EXPECTED_DOCKERFILES = ("Dockerfile.management", "Dockerfile.gateway")
EXPECTED_SERVICES = {"postgres", "redis", "migrate", "management", "worker", "gateway"}
DOCKERFILES = sorted(ROOT.glob("Dockerfile*"))

# What the compose file's ${...} references resolve to in these tests (not real secrets).
FAKE_SHELL_ENV = {
    "POSTGRES_PASSWORD": "5f0c9a1e7b2d4c6e8a0b1c2d3e4f5a6b",
    "VALKEY_PASSWORD": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
}

SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
# A secret may only be a required reference: no literal, and no literal default (${X:-...}).
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$")
URL_PASSWORD = re.compile(r"://[^/@\s:]+:(?P<password>[^@]+)@")
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


# --- Dockerfile parsing --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops these, inside a continuation too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    assert not pending, f"{path.name}: the file ends inside a continued line"
    return instructions


def split_flags(args: str) -> tuple[list[str], str]:
    """``--flag=value`` options in front of an instruction's arguments, and the rest."""
    flags: list[str] = []
    rest = args
    while match := re.match(r"(--\S+)\s+", rest):
        flags.append(match.group(1))
        rest = rest[match.end() :]
    return flags, rest


def words(args: str) -> list[str]:
    """Arguments of an instruction in JSON (exec) form or whitespace-separated form."""
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def copy_sources(instruction: Instruction) -> list[str]:
    """Source paths of a COPY/ADD from the build context (none for ``--from=`` copies)."""
    flags, rest = split_flags(instruction.args)
    if any(flag.startswith("--from=") for flag in flags):
        return []
    arguments = words(rest)
    assert len(arguments) >= 2, f"line {instruction.line}: {instruction.keyword} needs a source and a target"
    return [source for source in arguments[:-1] if "://" not in source]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV of the final stage."""
    env: dict[str, str] = {}
    for instruction in final_stage(instructions):
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=VALUE"
                env[key] = value
    return env


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [index for index, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def final(instructions: list[Instruction], keyword: str) -> Instruction | None:
    found = [instruction for instruction in final_stage(instructions) if instruction.keyword == keyword]
    return found[-1] if found else None


# --- .dockerignore -------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line; a later match overrides an earlier one."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    if not DOCKERIGNORE.exists():
        return patterns
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def is_ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the path (or a folder above it) is left out of the build context."""
    parts = Path(relative).parts
    for depth in range(1, len(parts) + 1):
        candidate = "/".join(parts[:depth])
        ignored = False
        for negated, regex in patterns:
            if regex.match(candidate):
                ignored = not negated
        if ignored:
            return True
    return False


# --- docker-compose.yml --------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    assert data["services"], "docker-compose.yml has no services"
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load_compose()["services"]
    return found


def one_shot_services(all_services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Services others wait for to exit 0 (``condition: service_completed_successfully``)."""
    found: set[str] = set()
    for service in all_services.values():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, dict):
            for name, condition in depends_on.items():
                if (condition or {}).get("condition") == "service_completed_successfully":
                    found.add(name)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping; None means passed through from the shell."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in env]
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        current = shell.get(name)
        op = match["op"] or ""
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return match["arg"] if unset else str(current)
        if op.endswith("?") and unset:
            raise LookupError(f"{name} is required: {match['arg']}")
        return current or ""

    return INTERPOLATION.sub(substitute, value)


def build_target(build: str | Mapping[str, Any]) -> tuple[Path, Path | None]:
    """(context, Dockerfile) of a service's ``build``; no Dockerfile for dockerfile_inline."""
    if isinstance(build, str):
        context = (COMPOSE_FILE.parent / build).resolve()
        return context, context / "Dockerfile"
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    if "dockerfile_inline" in build:
        return context, None
    return context, context / build.get("dockerfile", "Dockerfile")


def container_env(name: str, service: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    """What the container sees: the image's ENV, then the service's (interpolated) environment."""
    env: dict[str, str] = {}
    if "build" in service:
        _, dockerfile = build_target(service["build"])
        assert dockerfile is not None, f"{name}: no Dockerfile to read the image's ENV from"
        env.update(image_env(parse_dockerfile(dockerfile)))
    for key, value in environment(service).items():
        if value is None:
            if key in shell:
                env[key] = shell[key]
        else:
            env[key] = interpolate(value, shell)
    return env


def cli_commands() -> set[str]:
    import typer

    from freqfleet.cli import app

    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


# --- Dockerfiles ---------------------------------------------------------------------------


def test_the_dockerfiles_exist() -> None:
    names = {path.name for path in DOCKERFILES}
    assert set(EXPECTED_DOCKERFILES) <= names, f"missing: {sorted(set(EXPECTED_DOCKERFILES) - names)}"


def dockerfile_params() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in DOCKERFILES]


def build_contexts() -> dict[Path, Path]:
    """Each Dockerfile's build context: as compose builds it, else the repository root."""
    contexts = {path.resolve(): ROOT for path in DOCKERFILES}
    for service in services().values():
        if "build" in service:
            context, dockerfile = build_target(service["build"])
            if dockerfile is not None:
                contexts[dockerfile.resolve()] = context
    return contexts


@pytest.mark.parametrize("dockerfile", dockerfile_params())
def test_copied_paths_exist_and_are_not_dockerignored(dockerfile: Path) -> None:
    context = build_contexts()[dockerfile.resolve()]
    patterns = ignore_patterns()
    copies = [i for i in parse_dockerfile(dockerfile) if i.keyword in {"COPY", "ADD"}]
    assert copies, f"{dockerfile.name} copies nothing into the image"
    problems: list[str] = []
    for instruction in copies:
        for source in copy_sources(instruction):
            relative = source.strip("/") or "."
            wildcard = any(c in relative for c in "*?[")
            matches = list(context.glob(relative)) if wildcard else [context / relative]
            if not any(match.exists() for match in matches):
                problems.append(f"line {instruction.line}: {source} does not exist in {context}")
            elif relative != "." and is_ignored(relative, patterns):
                problems.append(f"line {instruction.line}: {source} is excluded by .dockerignore")
    assert not problems, f"{dockerfile.name}: " + "; ".join(problems)


@pytest.mark.parametrize("dockerfile", dockerfile_params())
def test_base_images_are_pinned(dockerfile: Path) -> None:
    stages: set[str] = set()
    for instruction in parse_dockerfile(dockerfile):
        if instruction.keyword != "FROM":
            continue
        _, rest = split_flags(instruction.args)
        parts = rest.split()
        image = parts[0]
        if len(parts) >= 3 and parts[1].lower() == "as":
            stages.add(parts[2].lower())
        if image.lower() in stages or image == "scratch" or "@sha256:" in image:
            continue
        last_segment = image.rsplit("/", 1)[-1]
        tag = last_segment.partition(":")[2]
        assert tag, f"{dockerfile.name} line {instruction.line}: {image} has no tag"
        assert tag != "latest", f"{dockerfile.name} line {instruction.line}: {image} is not pinned"
        assert "$" not in tag, f"{dockerfile.name} line {instruction.line}: {image}'s tag is a build argument"


@pytest.mark.parametrize("dockerfile", dockerfile_params())
def test_runs_as_a_non_root_user(dockerfile: Path) -> None:
    user = final(parse_dockerfile(dockerfile), "USER")
    assert user is not None, f"{dockerfile.name}: no USER in the final stage, the container would run as root"
    name = user.args.split(":", 1)[0].strip()
    assert name not in {"root", "0", ""}, f"{dockerfile.name} line {user.line}: USER {user.args} is root"


@pytest.mark.parametrize("dockerfile", dockerfile_params())
def test_has_a_healthcheck_on_the_exposed_port(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    healthcheck = final(instructions, "HEALTHCHECK")
    assert healthcheck is not None, f"{dockerfile.name}: no HEALTHCHECK"
    _, command = split_flags(healthcheck.args)
    where = f"{dockerfile.name} line {healthcheck.line}"
    assert command.upper().startswith("CMD "), f"{where}: HEALTHCHECK {command}"
    for tool in ("curl", "wget"):
        assert tool not in command, f"{dockerfile.name}: slim images carry no {tool}"
    expose = final(instructions, "EXPOSE")
    if expose is not None:
        for port in expose.args.split():
            number = port.split("/", 1)[0]
            assert number in command, f"{where}: the check does not ask the exposed port {number}"


@pytest.mark.parametrize("dockerfile", dockerfile_params())
def test_serves_a_freqfleet_command_on_all_interfaces(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    cmd = final(instructions, "CMD")
    assert cmd is not None, f"{dockerfile.name}: no CMD"
    assert cmd.args.startswith("["), f"{dockerfile.name}: use CMD's exec form so signals reach the process"
    argv = words(cmd.args)
    assert argv[0] == "freqfleet", argv
    assert argv[1] in cli_commands(), f"{dockerfile.name}: `freqfleet {argv[1]}` is not a command"
    env = image_env(instructions)
    assert env.get("FREQFLEET_DATA_DIR") == "/data", "FREQFLEET_DATA_DIR=/data is where the volume is"
    host = f"FREQFLEET_{argv[1].upper()}_HOST"
    assert env.get(host) == "0.0.0.0", f"{dockerfile.name}: {host}=0.0.0.0 or the port is unreachable"
    port = env.get(f"FREQFLEET_{argv[1].upper()}_PORT")
    expose = final(instructions, "EXPOSE")
    assert port is not None, f"{dockerfile.name}: set FREQFLEET_{argv[1].upper()}_PORT in the image"
    assert expose is not None, f"{dockerfile.name}: EXPOSE the port it serves"
    assert port in [p.split("/", 1)[0] for p in expose.args.split()], f"{dockerfile.name}: EXPOSE {port}"


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    missing = EXPECTED_SERVICES - set(services())
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_long_running_services_have_healthchecks() -> None:
    all_services = services()
    one_shots = one_shot_services(all_services)
    unknown = one_shots - set(all_services)
    assert not unknown, f"depends_on names unknown services: {unknown}"
    for name, service in all_services.items():
        if name in one_shots:
            restart = service.get("restart", "no")
            assert restart in {"no", "on-failure"}, f"{name} is one-shot: do not restart it"
            continue
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), f"{name}: the healthcheck is disabled"
        test = check.get("test")
        assert test, f"{name} runs for good but has no healthcheck test"
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test {test}"
            assert len(test) > 1, f"{name}: healthcheck test {test}"


def test_builds_point_at_dockerfiles_that_exist() -> None:
    builds = {name: s["build"] for name, s in services().items() if "build" in s}
    assert builds, "no service builds an image"
    for name, build in builds.items():
        context, dockerfile = build_target(build)
        assert context.is_dir(), f"{name}: build context {context} is not a folder"
        assert dockerfile is None or dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


def test_services_sharing_an_image_build_it_the_same_way() -> None:
    by_image: dict[str, list[tuple[str, Any]]] = {}
    for name, service in services().items():
        if "build" in service and "image" in service:
            by_image.setdefault(service["image"], []).append((name, service["build"]))
    for image, built in by_image.items():
        assert len({json.dumps(build, sort_keys=True) for _, build in built}) == 1, f"{image}: {built}"


def test_commands_are_freqfleet_commands() -> None:
    commands = cli_commands()
    for name, service in services().items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "freqfleet":
            assert command[1] in commands, f"{name}: `freqfleet {command[1]}` is not a command"


def test_no_literal_secrets() -> None:
    problems: list[str] = []
    for name, service in services().items():
        for key, value in environment(service).items():
            if value is None:
                continue  # passed through from the shell
            if SECRET_KEY.search(key) and not SECRET_REFERENCE.match(value):
                problems.append(f"{name}: {key} must be a required ${{...}} reference, not {value!r}")
            for match in URL_PASSWORD.finditer(value):
                if not SECRET_REFERENCE.match(match["password"]):
                    problems.append(f"{name}: {key} carries a literal password in its URL")
    assert not problems, "; ".join(problems)


def test_compose_refuses_to_start_without_the_database_password() -> None:
    postgres = services()["postgres"]
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        interpolate(environment(postgres)["POSTGRES_PASSWORD"] or "", {})


def test_compose_refuses_to_start_without_the_valkey_password() -> None:
    redis = services()["redis"]
    assert "--requirepass" in redis["command"]
    with pytest.raises(LookupError, match="VALKEY_PASSWORD"):
        interpolate(environment(redis)["REDISCLI_AUTH"] or "", {})


def test_postgres_18_volume_is_mounted_where_the_image_keeps_its_data() -> None:
    postgres = services()["postgres"]
    match = re.match(r"(?:.*/)?postgres:(\d+)", postgres["image"])
    assert match, f"postgres image {postgres['image']} has no major version tag"
    volumes = postgres.get("volumes", [])
    targets = [str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in volumes]
    assert targets, "postgres keeps its data in no volume"
    if int(match.group(1)) >= 18:
        # 18+ images refuse to start with a mount at the old path (PGDATA is /var/lib/postgresql/18/docker).
        assert "/var/lib/postgresql/data" not in targets
        assert "/var/lib/postgresql" in targets


@pytest.mark.parametrize("name", ["migrate", "management", "worker"])
def test_management_containers_get_production_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from management_server.config import ManagementSettings

    env = container_env(name, services()[name], FAKE_SHELL_ENV)
    for key in list(os.environ):
        if key.startswith("FREQFLEET_") or key in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ManagementSettings()
    assert settings.env.value == "production"
    assert settings.management_host == "0.0.0.0"
    assert str(settings.data_dir) == "/data"
    url = settings.database_url.get_secret_value()
    assert url.startswith("postgresql+asyncpg://freqfleet:"), url
    assert "@postgres:5432/" in url, url
    assert settings.redis_url.get_secret_value() == f"redis://:{FAKE_SHELL_ENV['VALKEY_PASSWORD']}@redis:6379/0"


def test_gateway_container_gets_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from trading_gateway.config import GatewaySettings

    env = container_env("gateway", services()["gateway"], FAKE_SHELL_ENV)
    for key in list(os.environ):
        if key.startswith("FREQFLEET_") or key in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings()
    assert settings.env.value == "production"
    assert settings.gateway_host == "0.0.0.0"
    assert settings.gateway_id == "gw-1"
    assert settings.management_url == "http://management:8000"
    assert str(settings.data_dir) == "/data"


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose``, when one works here."""
    candidates: list[list[str]] = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for candidate in candidates:
        try:
            result = subprocess.run([*candidate, "version"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return candidate
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    env = {key: value for key, value in os.environ.items() if key not in FAKE_SHELL_ENV}
    env.update(FAKE_SHELL_ENV)
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
