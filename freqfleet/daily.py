"""Daily work from the command line, as a client of the management server's API: ``freqfleet login``,
``freqfleet bots ...``, ``freqfleet strategies ...``, ``freqfleet models ...``, ``freqfleet emergency-stop``.

Tables for people, ``--json`` for scripts (the API's answer as it is). Bots, strategies and models are named by id,
by a unique prefix of it (6 characters or more) or by name. Every failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from freqfleet.client import Api, ClientError

Url = Annotated[
    str | None, typer.Option("--url", help="The management server (default: FREQFLEET_URL, or the last login).")
]
AsJson = Annotated[bool, typer.Option("--json", help="The API's answer as JSON, for scripts.")]
BotName = Annotated[str, typer.Argument(help="The bot's id or name.")]

bots_app = typer.Typer(help="Your bots: list, show, create, start, stop, pause, resume, logs.", no_args_is_help=True)
strategies_app = typer.Typer(help="Strategies: upload, list, approve (admins).", no_args_is_help=True)
models_app = typer.Typer(help="FreqAI models: train, list, deploy, roll back.", no_args_is_help=True)


@contextmanager
def api(url: str | None, command: str) -> Iterator[Api]:
    """An API client; a :class:`ClientError` becomes one line on stderr and exit code 1."""
    client = Api(url)
    try:
        yield client
    except ClientError as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Rows as aligned columns (``(header, key)`` each); a key may be a callable of the row."""
    cells = [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (h, _) in enumerate(columns)]
    typer.echo("  ".join(h.upper().ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def show(value: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        typer.echo(json.dumps(value, indent=2, default=str))
    else:
        human(value)


def fields(value: dict[str, Any], keys: Sequence[str]) -> None:
    width = max(len(k) for k in keys)
    for key in keys:
        if key in value:
            typer.echo(f"{key.ljust(width)}  {_cell(value[key])}")


# ------------------------------------------------------------------------------------------- login


def login(
    email: Annotated[str, typer.Option(prompt=True, help="Your account's email.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    url: Url = None,
) -> None:
    """Log in; the login is kept (0600, in your config folder) and renewed by itself until you log out."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("Password", hide_input=True)
    with api(url, "login") as client:
        client.login(email, password)
        typer.echo(f"logged in to {client.url} as {email}")


def logout(url: Url = None) -> None:
    """End the login (its tokens stop working at once) and forget it."""
    with api(url, "logout") as client:
        typer.echo(f"logged out of {client.url} ({client.logout()})")


# ------------------------------------------------------------------------------------------- bots

BOT_COLUMNS = (
    ("name", "name"),
    ("id", "id"),
    ("desired", "desired_state"),
    ("actual", "actual_state"),
    ("gateway", "gateway_id"),
    ("pairs", "pairs"),
    ("stake", "stake_amount"),
    ("error", "last_error"),
)
BOT_FIELDS = (
    "id",
    "name",
    "owner_id",
    "strategy_id",
    "exchange",
    "pairs",
    "timeframe",
    "stake_currency",
    "stake_amount",
    "max_open_trades",
    "dry_run",
    "desired_state",
    "actual_state",
    "generation",
    "gateway_id",
    "placement",
    "model_id",
    "model_state",
    "last_error",
    "notice",
)


@bots_app.command("list")
def bots_list(url: Url = None, as_json: AsJson = False) -> None:
    """Your bots (an admin's: everyone's), with their desired and actual state."""
    with api(url, "bots list") as client:
        show(client.get("/bots", limit=1000), as_json, lambda rows: table(rows, BOT_COLUMNS))


@bots_app.command("show")
def bots_show(bot: BotName, url: Url = None, as_json: AsJson = False) -> None:
    """One bot, and its live status."""
    with api(url, "bots show") as client:
        bot_id = client.bot_id(bot)
        found = client.get(f"/bots/{bot_id}")
        status = client.get(f"/bots/{bot_id}/status")

        def human(value: dict[str, Any]) -> None:
            fields(value["bot"], BOT_FIELDS)
            live = value["status"]
            trades = live.get("open_trades") or []
            age = live.get("age_seconds")
            typer.echo(f"{'status'.ljust(15)}  {_cell(live.get('state'))}" + (f" ({age:.0f} s ago)" if age else ""))
            typer.echo(f"{'open trades'.ljust(15)}  {len(trades)}")

        show({"bot": found, "status": status}, as_json, human)


@bots_app.command("create")
def bots_create(
    name: Annotated[str, typer.Argument(help="A name of letters, digits, spaces, '.', '_' and '-'.")],
    strategy: Annotated[str, typer.Option(help="The strategy's id or name.")],
    pair: Annotated[list[str], typer.Option("--pair", help="A pair to trade (again for more), e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe.")] = "5m",
    stake: Annotated[str, typer.Option(help="Stake per trade, or 'unlimited'.")] = "10",
    max_open_trades: Annotated[int, typer.Option(help="Trades open at once.")] = 3,
    wallet: Annotated[str | None, typer.Option(help="Dry-run wallet (default: Freqtrade's 1000).")] = None,
    exchange: Annotated[str, typer.Option(help="simulator, or a ccxt exchange id.")] = "simulator",
    model: Annotated[str | None, typer.Option(help="A FreqAI model's id or name (a FreqAI bot).")] = None,
    pin: Annotated[
        str | None, typer.Option(help="Admin: the gateway it runs on only (never moved by failover or a drain).")
    ] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Create a bot (dry-run); start it with `freqfleet bots start NAME`."""
    with api(url, "bots create") as client:
        body: dict[str, Any] = {
            "name": name,
            "strategy_id": client.strategy_id(strategy),
            "pairs": pair,
            "timeframe": timeframe,
            "stake_amount": stake,
            "max_open_trades": max_open_trades,
            "exchange": exchange,
        }
        if wallet is not None:
            body["dry_run_wallet"] = wallet
        if model is not None:
            body["model_id"] = client.model_id(model)
        if pin is not None:
            body["placement"] = {"gateway_id": pin}
        show(client.post("/bots", body), as_json, lambda value: fields(value, BOT_FIELDS))


@bots_app.command("pin")
def bots_pin(
    bot: BotName,
    gateway: Annotated[str | None, typer.Argument(help="The gateway; leave it out with --unpin.")] = None,
    unpin: Annotated[bool, typer.Option("--unpin", help="Let it run wherever there is room again.")] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Admin: pin a bot to one gateway (from its next start it runs there only, and failover and drains leave it:
    when that gateway is lost it reads `orphaned`), or unpin it."""
    if (gateway is None) != unpin:
        raise typer.BadParameter("name a gateway, or give --unpin")
    with api(url, "bots pin") as client:
        placement = None if unpin else {"gateway_id": gateway}
        changed = client.patch(f"/bots/{client.bot_id(bot)}", {"placement": placement})
        show(changed, as_json, lambda value: fields(value, BOT_FIELDS))


def _action(verb: str, help_text: str) -> None:
    def command(bot: BotName, url: Url = None, as_json: AsJson = False) -> None:
        with api(url, f"bots {verb}") as client:
            done = client.post(f"/bots/{client.bot_id(bot)}/{verb}")

            def human(value: dict[str, Any]) -> None:
                typer.echo(
                    f"{value['name']}: {verb} sent (desired {value['desired_state']}, now {value['actual_state']}, "
                    f"command {value.get('command_id')})"
                )
                if value.get("notice"):
                    typer.echo(value["notice"])

            show(done, as_json, human)

    command.__doc__ = help_text
    bots_app.command(verb)(command)


_action("start", "Start the bot on a gateway (its strategy must be approved).")
_action("stop", "Stop the bot (its open trades stay open in its database).")
_action("pause", "No new entries; open trades are still managed.")
_action("resume", "Take new entries again.")
_action("restart", "Restart the bot's process.")


MIGRATE_TIMEOUT = 900.0  # seconds the command waits for the gateway's answer


@bots_app.command("migrate-db")
def bots_migrate_db(
    bot: Annotated[list[str] | None, typer.Argument(help="The bots' ids or names.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every stopped bot whose trades are in SQLite.")] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Admin: move stopped bots' trades from SQLite into a PostgreSQL database of their own, copied and checked
    row by row on their gateway, one bot after the other; says what was copied."""
    with api(url, "bots migrate-db") as client:
        if every == bool(bot):
            raise ClientError("name the bots to migrate, or --all (not both)")
        names = bot or [b["id"] for b in client.get("/bots", limit=1000) if b.get("trade_db") == "sqlite"]
        results = [_migrate_one(client, client.bot_id(name)) for name in names]
        show(
            results,
            as_json,
            lambda rows: table(rows, (("bot", "name"), ("trades in", "trade_db"), ("copied", "copied"))),
        )
        failed = [r for r in results if r["trade_db"] != "postgres"]
        if failed:
            raise ClientError(f"{len(failed)} of {len(results)} not moved: " + "; ".join(r["copied"] for r in failed))


def _migrate_one(client: Api, bot_id: str) -> dict[str, Any]:
    """One bot's migration, followed to its gateway's answer; what came of it."""
    bot: dict[str, Any] = client.post(f"/bots/{bot_id}/migrate-db")
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    while bot["trade_db"] == "migrating" and time.monotonic() < deadline:
        time.sleep(0.5)
        bot = client.get(f"/bots/{bot_id}")
    if bot["trade_db"] == "migrating":
        copied = f"no answer from gateway {bot['gateway_id']} in {MIGRATE_TIMEOUT:.0f} s: still waiting"
    elif bot["trade_db"] == "postgres":
        rows = _copied_rows(client, bot_id)
        copied = ", ".join(f"{n} {table}" for table, n in rows.items() if n) or "nothing to copy"
    else:
        copied = bot.get("last_error") or "refused"
    return {"id": bot_id, "name": bot["name"], "trade_db": bot["trade_db"], "copied": copied}


def _copied_rows(client: Api, bot_id: str) -> dict[str, int]:
    """The rows per table the gateway copied and checked (its accepted answer, in the audit log)."""
    page = client.get("/audit", action="bot.migrate_trade_db", target_id=bot_id, limit=5)
    for entry in page["items"]:
        result = (entry.get("details") or {}).get("result")
        if entry.get("outcome") == "accepted" and isinstance(result, dict):
            return {str(k): int(v) for k, v in result.items()}
    return {}


@bots_app.command("logs")
def bots_logs(
    bot: BotName,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the latest lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Then every new line, until Ctrl-C.")] = False,
    url: Url = None,
) -> None:
    """The bot's last log lines, read on its gateway (its secrets taken out)."""
    with api(url, "bots logs") as client:
        bot_id = client.bot_id(bot)
        if not follow:
            for line in client.get(f"/bots/{bot_id}/logs", lines=lines)["lines"]:
                typer.echo(line)
            return
        kind = "line"
        try:
            for raw in client.stream_lines(f"/bots/{bot_id}/logs", lines=lines, follow="true"):
                if raw.startswith("event: "):
                    kind = raw.removeprefix("event: ")
                elif raw.startswith("data: "):
                    data = json.loads(raw.removeprefix("data: "))
                    if kind == "line":
                        typer.echo(data["line"])
                    else:
                        typer.echo(f"[{kind}] {data.get('message', '')}", err=True)
        except KeyboardInterrupt:
            return


# ------------------------------------------------------------------------------------------- strategies

STRATEGY_COLUMNS = (
    ("name", "name"),
    ("id", "id"),
    ("class", "class_name"),
    ("status", "status"),
    ("check", "check_status"),
)


@strategies_app.command("upload")
def strategies_upload(
    file: Annotated[Path, typer.Argument(help="The strategy's .py file.", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option(help="Its name (default: the file's name).")] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Upload a strategy: checked at once; a non-admin's waits for an admin's approval."""
    with api(url, "strategies upload") as client:
        body = {"name": name or file.stem, "source": file.read_text()}
        done = client.post("/strategies", body)
        show(done, as_json, lambda value: fields(value, ("id", "name", "class_name", "status", "check_status")))


@strategies_app.command("list")
def strategies_list(url: Url = None, as_json: AsJson = False) -> None:
    """Strategies you may use."""
    with api(url, "strategies list") as client:
        show(client.get("/strategies"), as_json, lambda rows: table(rows, STRATEGY_COLUMNS))


@strategies_app.command("approve")
def strategies_approve(
    strategy: Annotated[str, typer.Argument(help="The strategy's id or name.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Approve a strategy under review (admins): bots may run it."""
    with api(url, "strategies approve") as client:
        done = client.post(f"/strategies/{client.strategy_id(strategy)}/approve")
        show(done, as_json, lambda value: typer.echo(f"{value['name']}: {value['status']}"))


# ------------------------------------------------------------------------------------------- models

MODEL_COLUMNS = (
    ("name", "name"),
    ("version", "version"),
    ("id", "id"),
    ("status", "status"),
    ("pairs", "pairs"),
    ("timeframe", "timeframe"),
    ("error", "error"),
)


@models_app.command("list")
def models_list(url: Url = None, as_json: AsJson = False) -> None:
    """FreqAI model versions you may use."""
    with api(url, "models list") as client:
        show(client.get("/models"), as_json, lambda rows: table(rows, MODEL_COLUMNS))


@models_app.command("train")
def models_train(
    pair: Annotated[list[str], typer.Option("--pair", help="A pair to train on (again for more).")],
    name: Annotated[str | None, typer.Option(help="The model's name (each training is its next version).")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="A FreqAI strategy's id or name (default: FreqaiExample).")
    ] = None,
    timeframe: Annotated[str, typer.Option(help="Candle timeframe.")] = "5m",
    days: Annotated[int, typer.Option(help="Days of candles to train on.")] = 2,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show its progress until it ends.")] = True,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Train a FreqAI model on a worker; with --wait (the default) a progress bar until it ends."""
    with api(url, "models train") as client:
        body: dict[str, Any] = {"pairs": pair, "timeframe": timeframe, "days": days}
        if name is not None:
            body["name"] = name
        if strategy is not None:
            body["strategy_id"] = client.strategy_id(strategy)
        model = client.post("/models/train", body)
        if wait:
            model = _follow_training(client, model, quiet=as_json)
        show(model, as_json, lambda value: fields(value, ("id", "name", "version", "status", "error", "sha256")))
        if model["status"] == "failed":
            raise ClientError(f"the training failed: {model.get('error')}")


def _follow_training(client: Api, model: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """The model once its training ended; a progress bar on stderr meanwhile (none for ``--json``)."""

    def step() -> dict[str, Any]:
        time.sleep(1)
        found: dict[str, Any] = client.get(f"/models/{model['id']}")
        return found

    if quiet:
        while model["status"] in ("queued", "running"):
            model = step()
        return model
    with typer.progressbar(length=100, label=f"{model['name']} v{model['version']}", file=sys.stderr) as bar:
        done = 0
        while model["status"] in ("queued", "running"):
            model = step()
            fraction = float((model.get("progress") or {}).get("fraction") or 0)
            now = 100 if model["status"] == "succeeded" else int(fraction * 100)
            if now > done:
                bar.update(now - done)
                done = now
    return model


@models_app.command("deploy")
def models_deploy(
    bot: BotName,
    model: Annotated[str, typer.Argument(help="The model version's id.")],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Deploy a model version to a bot: a running bot swaps it in without a restart."""
    with api(url, "models deploy") as client:
        done = client.post(f"/bots/{client.bot_id(bot)}/model", {"model_id": client.model_id(model)})
        show(done, as_json, lambda value: fields(value, ("model_id", "model_state", "deployment")))


@models_app.command("rollback")
def models_rollback(bot: BotName, url: Url = None, as_json: AsJson = False) -> None:
    """Put the bot's previous model back."""
    with api(url, "models rollback") as client:
        done = client.post(f"/bots/{client.bot_id(bot)}/model/rollback")
        show(done, as_json, lambda value: fields(value, ("model_id", "model_state", "deployment")))


# ------------------------------------------------------------------------------------------- emergency


def emergency_stop(
    every: Annotated[bool, typer.Option("--all", help="Every user's bots (admins).")] = False,
    bot: Annotated[list[str] | None, typer.Option("--bot", help="Only this bot (again for more).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Halt your bots now (or --all, or --bot ...): no new entries, every open trade closed, processes ended."""
    with api(url, "emergency-stop") as client:
        body: dict[str, Any] = {"scope": "all" if every else "mine"}
        if bot:
            body = {"bot_ids": [client.bot_id(b) for b in bot]}
        if reason:
            body["reason"] = reason
        done = client.post("/emergency-stop", body)

        def human(value: dict[str, Any]) -> None:
            rows = value.get("results") or []
            table(rows, (("bot", "bot_id"), ("outcome", "outcome"), ("detail", "detail")))

        show(done, as_json, human)
