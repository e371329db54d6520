"""The ``freqfleet`` command line."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from freqfleet import daily

app = typer.Typer(
    name="freqfleet",
    help="Freqfleet: run fleets of Freqtrade bots. `freqfleet up` starts everything on the embedded default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _private_files() -> None:
    """What a service creates (keys, dumps, outboxes, Valkey's and PostgreSQL's files) is its user's alone."""
    import os

    os.umask(0o077)


@app.command()
def up() -> None:
    """Start PostgreSQL, Valkey, the exchange simulator, the management server, the gateway and a Celery worker;
    Ctrl-C stops all."""
    _private_files()
    from freqfleet.stack import Stack, StackSettings
    from shared.logging import configure_logging

    try:
        settings = StackSettings()
    except ValueError as exc:
        typer.echo(f"freqfleet up: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging("freqfleet-up", settings.log_level, settings.log_format)
    raise typer.Exit(Stack(settings).run())


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database named by DATABASE_URL to the latest schema (or REVISION); with
    FREQFLEET_ADMIN_EMAIL set, also create the first admin if there is none."""
    from freqfleet.database import upgrade
    from management_server.config import get_settings
    from management_server.security.passwords import password_problems

    settings = get_settings()
    upgrade(settings.database_url.get_secret_value(), revision)
    typer.echo(f"database at revision {revision}")
    if settings.admin_email is not None:
        # The ops path (docker compose) has no `up`: the first admin comes with the schema.
        from freqfleet.database import bootstrap_admin

        password = settings.admin_password.get_secret_value() if settings.admin_password else None
        if password is not None and (problems := password_problems(password, str(settings.admin_email))):
            typer.echo("migrate: FREQFLEET_ADMIN_PASSWORD: " + "; ".join(problems), err=True)
            raise typer.Exit(2)
        admin = bootstrap_admin(settings, str(settings.admin_email), password)
        if admin.generated_password is not None:
            typer.echo(f"first admin {admin.email}, password {admin.generated_password} (shown once: keep it now)")
        elif admin.created:
            typer.echo(f"first admin {admin.email} created")


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(prompt=True, help="The admin's email.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="FREQFLEET_ADMIN_PASSWORD"),
    ],
) -> None:
    """Create an admin user in the database named by DATABASE_URL."""
    from freqfleet import database
    from management_server.config import get_settings
    from management_server.security.passwords import password_problems

    if problems := password_problems(password):
        typer.echo("create-admin: " + "; ".join(problems), err=True)
        raise typer.Exit(2)
    try:
        user_id = database.create_admin(get_settings(), email, password)
    except ValueError as exc:
        typer.echo(f"create-admin: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"admin {email} created (id {user_id})")


@app.command()
def management() -> None:
    """Serve the management server (FREQFLEET_MANAGEMENT_HOST/PORT)."""
    _private_files()
    from management_server.main import run

    run()


@app.command()
def gateway() -> None:
    """Serve the trading gateway (FREQFLEET_GATEWAY_HOST/PORT)."""
    _private_files()
    from trading_gateway.main import run

    run()


@app.command()
def simulator() -> None:
    """Serve the exchange simulator (FREQFLEET_SIMULATOR_HOST/PORT/SEED/PAIRS)."""
    from pydantic import ValidationError

    from exchange_simulator.app import run
    from exchange_simulator.config import get_settings

    try:
        get_settings()
    except ValidationError as exc:
        typer.echo(f"freqfleet simulator: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    run()


@app.command()
def worker() -> None:
    """Run a Celery worker of the management server."""
    _private_files()
    from management_server.worker_metrics import prepare

    prepare()  # before anything imports prometheus_client: the worker's processes share their metrics
    from management_server.worker import run

    run()


@app.command()
def backup(
    output: Annotated[
        str | None, typer.Option(help="Folder for the archive (default: FREQFLEET_BACKUP_DIR or <data dir>/backups).")
    ] = None,
) -> None:
    """Back up the database and the model store and keys into one archive (with a manifest and checksums)."""
    from pathlib import Path

    from freqfleet.backup import backup as run_backup
    from management_server.backups.archive import BackupError
    from management_server.config import get_settings

    try:
        path = run_backup(get_settings(), Path(output) if output else None)
    except BackupError as exc:
        typer.echo(f"backup: {exc}", err=True)
        raise typer.Exit(1) from exc
    settings = get_settings()
    where = (
        "FREQFLEET_BACKUP_KEY"
        if settings.backup_key
        else str(settings.backup_key_file or settings.default_backup_key_file)
    )
    typer.echo(f"backup written to {path} ({path.stat().st_size} bytes), encrypted with the backup key ({where}).")
    typer.echo("Keep a copy of that key away from this host: without it the archive can't be restored.")


@app.command()
def restore(
    archive: Annotated[str, typer.Argument(help="A backup archive (freqfleet-backup-*.tar.enc).")],
    trust_unencrypted: Annotated[
        bool,
        typer.Option(
            "--trust-unencrypted", help="Also restore a plain .tar (first format): nothing proves who wrote it."
        ),
    ] = False,
) -> None:
    """Restore a backup into a fresh FREQFLEET_DATA_DIR (and an empty database: DATABASE_URL's, or the data
    dir's embedded one), after decrypting it with the backup key (FREQFLEET_BACKUP_KEY or FREQFLEET_BACKUP_KEY_FILE)
    and checking every checksum; then bring the schema up to date. Restoring trusts the archive's contents."""
    from pathlib import Path

    from freqfleet.backup import restore as run_restore
    from management_server.backups.archive import BackupError
    from management_server.config import get_settings

    settings = get_settings()
    try:
        done = run_restore(settings, Path(archive), trust_unencrypted=trust_unencrypted)
    except BackupError as exc:
        typer.echo(f"restore: {exc}", err=True)
        raise typer.Exit(1) from exc
    manifest = done["manifest"]
    typer.echo(
        f"restored the backup of {manifest['created_at']} (schema {manifest['schema_revision']}) into "
        f"{done['data_dir']}: the database, {len(done['bot_databases'])} bots' trade databases and "
        f"{len(done['placed'])} files and folders"
    )


@app.command("rotate-keys")
def rotate_keys(
    command: bool = typer.Option(False, "--command", help="Rotate the command-signing key instead of the token key."),
) -> None:
    """Add a new token-signing (or, with --command, command-signing) key; it signs after the next restart of the
    management server, and the old keys still verify."""
    from management_server.bus.signing import KEYS_DIR as COMMAND_KEYS_DIR
    from management_server.config import get_settings
    from management_server.security.keys import KeyRing, add_key

    settings = get_settings()
    configured, variable = (
        (settings.command_signing_keys, "FREQFLEET_COMMAND_SIGNING_KEYS")
        if command
        else (settings.jwt_private_keys, "FREQFLEET_JWT_PRIVATE_KEYS")
    )
    if configured is not None:
        typer.echo(f"rotate-keys: keys come from {variable}; append a new PEM key there instead.", err=True)
        raise typer.Exit(2)
    directory = settings.data_dir / (COMMAND_KEYS_DIR if command else "keys")
    path = add_key(directory)
    ring = KeyRing.from_directory(directory)
    typer.echo(f"new signing key {ring.active.kid} in {path}; {len(ring.keys)} keys published.")
    if command:
        typer.echo("Restart the management server to sign commands with it; gateways fetch it when they first see")
        typer.echo(
            "it. Delete an old key file once no command it signed can still be waiting (FREQFLEET_COMMAND_MAX_AGE)."
        )
    else:
        typer.echo("Restart the management server to sign with it. Delete an old key file once no token it signed")
        typer.echo("can still be valid (the longest personal access token lifetime).")


gateways_app = typer.Typer(
    help="Gateway identities: print this host's (`identity`), and, on the management host, enroll, list or revoke."
)
app.add_typer(gateways_app, name="gateways")


@gateways_app.command("identity")
def gateway_identity() -> None:
    """Print this gateway's enrollment line (made on first use: <gateway dir>/identity.json, 0600). Give the line to
    an admin, who enrolls it with `freqfleet gateways enroll` (or POST /api/v1/gateways)."""
    from trading_gateway.config import get_settings as gateway_settings
    from trading_gateway.identity import IdentityError, load_or_create

    settings = gateway_settings()
    try:
        identity = load_or_create(settings.gateway_data_dir, settings.gateway_id)
    except IdentityError as exc:
        typer.echo(f"gateways identity: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(identity.enrollment())


@gateways_app.command("enroll")
def gateway_enroll(
    enrollment: Annotated[str, typer.Argument(help="The line `freqfleet gateways identity` printed on the gateway.")],
) -> None:
    """Enroll a gateway in the database named by DATABASE_URL: its signed reports are applied from now on, and
    live bots' credentials can be sealed to it."""
    from freqfleet import database
    from management_server.config import get_settings
    from management_server.gateways.service import EnrollmentRefused

    try:
        gateway_id, changed = database.enroll_gateway(get_settings(), enrollment)
    except EnrollmentRefused as exc:
        typer.echo(f"gateways enroll: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"gateway {gateway_id} {'enrolled' if changed else 'was enrolled already with these keys'}")


@gateways_app.command("list")
def gateway_list() -> None:
    """List the gateways (enrolled, revoked, or heard of but never enrolled) of the database named by DATABASE_URL."""
    from freqfleet import database
    from management_server.config import get_settings

    for row in database.gateways(get_settings()):
        typer.echo("\t".join(row))


@gateways_app.command("revoke")
def gateway_revoke(gateway_id: Annotated[str, typer.Argument(help="The gateway to revoke.")]) -> None:
    """Revoke a gateway: its reports are refused, nothing is sent to it, and its bots are orphaned."""
    from freqfleet import database
    from management_server.config import get_settings
    from management_server.gateways.service import EnrollmentRefused

    try:
        orphaned = database.revoke_gateway(get_settings(), gateway_id)
    except EnrollmentRefused as exc:
        typer.echo(f"gateways revoke: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"gateway {gateway_id} revoked; {orphaned} bots orphaned (start them again on an enrolled gateway)")


bus_app = typer.Typer(help="Inspect the bus: dead letters, and replaying them once their cause is fixed.")
app.add_typer(bus_app, name="bus")


class CommandFailed(Exception):
    """A one-line reason an operations command could not run (printed, exit code 1)."""


def _redis() -> Any:
    """REDIS_URL's server, or the embedded Valkey of the data dir that `freqfleet up` runs (as `backup` finds
    the embedded PostgreSQL)."""
    import os

    from management_server.config import get_settings
    from shared.redis import create_redis

    if "REDIS_URL" in os.environ or "FREQFLEET_REDIS_URL" in os.environ:
        return create_redis(get_settings().redis_url.get_secret_value())
    from freqfleet.embedded import EmbeddedValkey
    from freqfleet.stack import StackSettings

    settings = StackSettings()
    data_dir = settings.data_dir.resolve()
    if not (data_dir / "valkey").is_dir():
        raise CommandFailed(
            f"no embedded Valkey in {data_dir} (FREQFLEET_DATA_DIR): run `freqfleet up` there, or set REDIS_URL"
        )
    return create_redis(EmbeddedValkey(data_dir, settings.valkey_port).url)


def _run_on_redis(command: str, work: Any) -> Any:
    """``asyncio.run(work(redis))`` with one line on stderr, not a traceback, when Redis can't be reached."""
    import asyncio

    from redis.exceptions import RedisError

    async def run() -> Any:
        redis = _redis()
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except CommandFailed as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (RedisError, OSError) as exc:
        typer.echo(f"{command}: Redis is not reachable ({type(exc).__name__}: {str(exc)[:200]})", err=True)
        raise typer.Exit(1) from exc


@bus_app.command("dead-letters")
def dead_letters(
    stream: Annotated[str | None, typer.Argument(help="A dead-letter stream (default: list them all).")] = None,
    count: Annotated[int, typer.Option(help="How many to show, oldest first.")] = 20,
) -> None:
    """List dead-letter streams, or the dead letters of one, with why each died."""
    from shared.bus.dead_letters import dead_letter_streams, list_dead_letters

    async def run(redis: Any) -> None:
        if stream is None:
            names = await dead_letter_streams(redis)
            for name in names:
                typer.echo(f"{name}\t{await redis.xlen(name)} dead letters")
            if not names:
                typer.echo("no dead letters: every message on the bus was handled")
            return
        letters = await list_dead_letters(redis, stream, count)
        for letter in letters:
            typer.echo(
                f"{letter.entry_id}\t{letter.message_type or '?'}\tevent {letter.event_id or '?'}\t"
                f"from {letter.source_stream} ({letter.group}), {letter.deliveries} deliveries\t{letter.reason}"
            )
        if not letters:
            typer.echo(f"no dead letters in {stream}")

    _run_on_redis("bus dead-letters", run)


@bus_app.command("replay")
def replay(
    stream: Annotated[str, typer.Argument(help="The dead-letter stream, e.g. freqfleet:events:dead.")],
    entry_id: Annotated[str, typer.Argument(help="The dead letter's entry id (from `freqfleet bus dead-letters`).")],
) -> None:
    """Put a dead letter's message back on the stream it came from, to be handled again (a gateway's command is
    signed anew with the management server's command-signing key)."""
    from management_server.bus.signing import command_signer, load_command_keys
    from management_server.config import get_settings
    from shared.bus.dead_letters import DeadLetterNotFound
    from shared.bus.dead_letters import replay as replay_letter
    from shared.bus.streams import COMMANDS_PREFIX

    settings = get_settings()
    signer = command_signer(load_command_keys(settings)) if stream.startswith(COMMANDS_PREFIX) else None

    async def run(redis: Any) -> str:
        try:
            return str(await replay_letter(redis, stream, entry_id, signer, settings.stream_retention))
        except DeadLetterNotFound as exc:
            raise CommandFailed(str(exc)) from exc

    new_id = _run_on_redis("bus replay", run)
    typer.echo(f"replayed as entry {new_id}")


# Daily work, as a client of the API (freqfleet/daily.py).
app.command(help="Log in to a management server; the login is kept and renewed until you log out.")(daily.login)
app.command(help="End the login and forget it.")(daily.logout)
app.add_typer(daily.bots_app, name="bots")
app.add_typer(daily.strategies_app, name="strategies")
app.add_typer(daily.models_app, name="models")
app.command("emergency-stop", help="Halt your bots now (or --all, or --bot ...).")(daily.emergency_stop)


def main() -> None:
    app(prog_name="freqfleet")
    sys.exit(0)
