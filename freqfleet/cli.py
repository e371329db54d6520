"""The ``freqfleet`` command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="freqfleet",
    help="Freqfleet: run fleets of Freqtrade bots. `freqfleet up` starts everything on the embedded default.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def up() -> None:
    """Start PostgreSQL, Valkey, the exchange simulator, the management server, the gateway and a Celery worker;
    Ctrl-C stops all."""
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
    """Upgrade the database named by DATABASE_URL to the latest schema (or REVISION)."""
    from freqfleet.database import upgrade
    from management_server.config import get_settings

    upgrade(get_settings().database_url.get_secret_value(), revision)
    typer.echo(f"database at revision {revision}")


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
    from management_server.main import run

    run()


@app.command()
def gateway() -> None:
    """Serve the trading gateway (FREQFLEET_GATEWAY_HOST/PORT)."""
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
    from management_server.worker import run

    run()


def main() -> None:
    app(prog_name="freqfleet")
    sys.exit(0)
