"""A bot's folder and its Freqtrade config, rendered from a ``BotSpec``.

Layout, under the gateway's bots folder (``<data_dir>/gateway/<gateway_id>/bots/<bot_id>/``, mode 0700)::

    config.json          the rendered config (mode 0600: API password, live exchange keys)
    strategies/<Class>.py the strategy source, the only file in its folder
    user_data/           Freqtrade's user dir (data downloads, FreqAI models)
    tradesv3.sqlite      the trade database (SQLite in WAL mode: -wal and -shm beside it)
    bot.log              Freqtrade's own log, rotated by Freqtrade (10 MB x 5)
    console.log          the process's stdout/stderr: the few lines before logging is set up, tracebacks

Decisions:

- The config sets ``log_config`` with a rotating file handler only, so Freqtrade's log is not also
  written to stderr (with ``--logfile`` alone every line is duplicated there, unrotated).
- ``entry_pricing`` / ``exit_pricing`` take the other side of the book (``price_side: other``):
  it is required for market orders and makes limit orders cross the spread, so dry-run fills are
  immediate and deterministic. Order types stay the strategy's.
- Exchange keys go into the config only for a live bot (``dry_run`` false); a dry-run bot never gets
  keys on disk. A live bot on the exchange simulator is refused (it has no private API).
- Everything is checked before anything is spawned, and a wrong spec raises :class:`BotConfigError`
  with a reason a person can act on: the strategy class must be defined in the source (a cheap AST
  check; the management server validates strategies fully), the timeframe must exist (the
  simulator's Binance intervals for the simulator), every pair must be quoted in the stake currency.
- Files are written atomically (temporary file, fsync, ``os.replace``), so a bot never reads half a
  config and a crash never leaves one.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from shared import python_source
from shared.bus.messages import BotSpec, SealedCredentials, SealedDatabase
from shared.exchange import (
    PUBLIC_API_SUFFIX,
    SIMULATOR,
    ExchangeCredentials,
    offline_config,
    redact_exchange_section,
    render_exchange_section,
)
from shared.files import atomic_write, inside, open_read_nofollow
from shared.freqai.catalog import DEFAULT_MODEL, FREQAIMODELS_DIR, freqfleet_class
from shared.freqai.live import ModelRuntime, live_freqai_section
from shared.sandbox.host import hand_over
from shared.sealing import SealError
from shared.settings import redact_url
from shared.timeframes import INTERVALS as SIMULATOR_TIMEFRAMES
from shared.trade_db import POSTGRES_DRIVER
from shared.watchdog import LEASE_FILE
from trading_gateway.bots.credentials import ApiCredentials

BOT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TIMEFRAME = re.compile(r"^([1-9][0-9]{0,2})([smhdwM])$")
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
DIR_MODE = 0o700
META_DIR = "bots-meta"
LEASES_DIR = "leases"  # <gateway dir>/leases/<bot>/lease.json: see shared/watchdog.py
MAX_CONFIG_BYTES = 16 * 1024 * 1024
SECRET_FILE_MODE = 0o600


class BotConfigError(ValueError):
    """A bot's spec can't be turned into a working Freqtrade config; the message says why."""


@dataclass(frozen=True)
class BotFiles:
    """The paths of one bot's folder (nothing is created until :meth:`prepare`)."""

    root: Path
    bot_id: str

    def __post_init__(self) -> None:
        if not BOT_ID_PATTERN.match(self.bot_id) or self.bot_id in (".", ".."):
            raise ValueError(f"not a usable bot id for a folder name: {self.bot_id!r}")
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def folder(self) -> Path:
        return self.root / self.bot_id

    @property
    def meta(self) -> Path:
        """The gateway's own records of this bot (spec, supervision, models): outside the folder the bot may
        write, so a sandboxed bot can't change what the gateway believes about it."""
        return self.root.parent / META_DIR / self.bot_id

    @property
    def lease(self) -> Path:
        """The bot's lease file (``shared/watchdog.py``): written by the gateway after each renewal, read by the
        watchdog in the bot's process; its folder is the one path outside its own the bot may read of the
        gateway's."""
        return self.root.parent / LEASES_DIR / self.bot_id / LEASE_FILE

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def strategies(self) -> Path:
        return self.folder / "strategies"

    def strategy_file(self, strategy_class: str) -> Path:
        return self.strategies / f"{strategy_class}.py"

    @property
    def user_data(self) -> Path:
        return self.folder / "user_data"

    @property
    def db(self) -> Path:
        return self.folder / "tradesv3.sqlite"

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of the trade database: ``sqlite:////abs/path`` (never relative to a cwd)."""
        return f"sqlite:///{self.db}"

    @property
    def log(self) -> Path:
        return self.folder / "bot.log"

    @property
    def console_log(self) -> Path:
        return self.folder / "console.log"

    def prepare(self) -> None:
        """Create the folder tree, private to the gateway's user (and, sandboxed, to the bot's uid)."""
        for folder in (self.root, self.folder, self.strategies, self.user_data, self.meta):
            folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        for folder in (self.folder, self.strategies, self.user_data, self.meta):
            if folder.is_symlink():
                raise BotConfigError(f"{folder} is a symlink: the bot's folder was tampered with")
            folder.chmod(DIR_MODE)

    def move_to_meta(self, names: tuple[str, ...]) -> None:
        """Move records an older gateway kept in the bot's folder to :attr:`meta` (once, at start)."""
        for name in names:
            old, new = self.folder / name, self.meta / name
            if old.is_file() and not old.is_symlink() and not new.exists():
                self.meta.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                os.replace(old, new)

    def write(self, config: BotConfig, strategy_source: str) -> None:
        """Write the strategy and the config (atomically, 0600); drop other strategy files.

        Freqtrade imports every ``.py`` file of the strategy folder while looking for the class, so
        a strategy of an earlier generation must not stay there.
        """
        if config.bot_id != self.bot_id:
            raise ValueError(f"config of bot {config.bot_id} written to the folder of bot {self.bot_id}")
        self.prepare()
        target = self.strategy_file(config.strategy_class)
        self.write_file(target, strategy_source.encode())
        for stale in self.strategies.glob("*.py"):
            if stale != target:
                stale.unlink()
        self.write_file(self.config, json.dumps(config.data, indent=2).encode())

    def _inside(self, folder: Path) -> None:
        if not inside(folder, self.folder):
            raise BotConfigError(f"{folder} leads out of the bot's folder (a symlink the bot made): not written")

    def _give(self, path: Path) -> None:
        """What the gateway wrote in the folder belongs to the folder's owner (a sandboxed bot's uid), never
        through a link."""
        owner = self.folder.stat().st_uid
        if owner != os.geteuid():
            hand_over(path, owner)

    def give_tree(self, folder: Path) -> None:
        """``folder`` (inside the bot's folder) and all in it owned like the bot's folder (never through a link)."""
        self._inside(folder)
        self._give(folder)

    def make_dirs(self, folder: Path) -> None:
        """Create ``folder`` (inside the bot's folder) and its parents, owned like the bot's folder."""
        missing = [p for p in (folder, *folder.parents) if p != self.folder and self.folder in p.parents]
        for path in reversed(missing):
            if not path.is_dir():
                self._inside(path.parent)
                path.mkdir(mode=DIR_MODE)
                self._give(path)
        self._inside(folder)

    def write_file(self, path: Path, data: bytes) -> None:
        """Write ``path`` (inside the bot's folder, never through a symlink) atomically, owned like the folder."""
        self._inside(path.parent)
        atomic_write(path, data)
        self._give(path)

    def read_config(self) -> dict[str, Any]:
        with open_read_nofollow(self.config) as f:
            data: dict[str, Any] = json.loads(f.read(MAX_CONFIG_BYTES))
        return data


@dataclass(frozen=True)
class BotConfig:
    """A rendered Freqtrade config (``data``) and the facts the process layer needs from it."""

    bot_id: str
    strategy_class: str
    port: int
    credentials: ApiCredentials = field(repr=False)
    db_url: str
    dry_run: bool
    data: dict[str, Any] = field(repr=False)

    def redacted(self) -> dict[str, Any]:
        """A copy fit for logs: API and exchange secrets masked."""
        copy = json.loads(json.dumps(self.data))
        api = copy.get("api_server", {})
        for key in ("password", "jwt_secret_key", "ws_token"):
            if key in api:
                api[key] = "***"
        if "exchange" in copy:
            copy["exchange"] = redact_exchange_section(copy["exchange"])
        if isinstance(copy.get("db_url"), str):
            copy["db_url"] = redact_url(copy["db_url"])
        redacted: dict[str, Any] = copy
        return redacted


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def validate_spec(spec: BotSpec) -> None:
    """Raise :class:`BotConfigError` with a readable reason when ``spec`` can't run."""
    try:
        tree = python_source.parse(spec.strategy_source, filename=f"{spec.strategy_class}.py")
    except SyntaxError as exc:
        raise BotConfigError(f"the strategy source does not parse: line {exc.lineno}: {exc.msg}") from None
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    if spec.strategy_class not in classes:
        found = ", ".join(classes) if classes else "none"
        raise BotConfigError(
            f"the strategy source does not define class {spec.strategy_class} at its top level (classes: {found})"
        )

    match = _TIMEFRAME.match(spec.timeframe)
    if match is None:
        raise BotConfigError(f"unknown timeframe {spec.timeframe!r} (e.g. 1m, 5m, 1h, 1d)")
    if spec.exchange == SIMULATOR and spec.timeframe not in SIMULATOR_TIMEFRAMES:
        raise BotConfigError(
            f"the exchange simulator has no timeframe {spec.timeframe!r}; it has {', '.join(SIMULATOR_TIMEFRAMES)}"
        )

    wrong = [p for p in spec.pairs if p.split(":")[0].split("/")[1] != spec.stake_currency]
    if wrong:
        raise BotConfigError(f"pairs not quoted in the stake currency {spec.stake_currency}: {', '.join(wrong)}")
    twice = sorted({p for p in spec.pairs if spec.pairs.count(p) > 1})
    if twice:
        raise BotConfigError(f"pairs listed twice: {', '.join(twice)}")
    if spec.stake_amount != "unlimited" and spec.stake_amount <= 0:
        raise BotConfigError(f"stake_amount must be positive or 'unlimited', not {spec.stake_amount}")
    if not spec.dry_run and spec.exchange == SIMULATOR:
        raise BotConfigError("a live bot can't trade on the exchange simulator (it has no private API): use dry_run")


class CredentialOpener(Protocol):
    """Who opens a live bot's sealed exchange credentials (the gateway's identity)."""

    def open_credentials(self, sealed: SealedCredentials, bot_id: str) -> ExchangeCredentials: ...

    def open_database(self, sealed: SealedDatabase, bot_id: str) -> str: ...


def _exchange_credentials(spec: BotSpec, bot_id: str, opener: CredentialOpener | None) -> ExchangeCredentials | None:
    if spec.dry_run or spec.credentials is None:
        return None  # a dry-run bot never gets keys on disk
    if opener is None:
        raise BotConfigError("this gateway has no identity to open the bot's sealed exchange credentials")
    try:
        return opener.open_credentials(spec.credentials, bot_id)
    except SealError as exc:
        raise BotConfigError(str(exc)) from None


def _trade_database(spec: BotSpec, files: BotFiles, opener: CredentialOpener | None) -> str:
    """The bot's ``db_url``: its own PostgreSQL database (sealed to this gateway), or SQLite in its folder."""
    if spec.database is None:
        return files.db_url
    if opener is None:
        raise BotConfigError("this gateway has no identity to open the bot's sealed trade database")
    try:
        url = opener.open_database(spec.database, files.bot_id)
    except SealError as exc:
        raise BotConfigError(str(exc)) from None
    parts = urlsplit(url)
    if parts.scheme != POSTGRES_DRIVER or not parts.hostname or parts.port is None:
        raise BotConfigError(f"the bot's trade database is not a {POSTGRES_DRIVER}://host:port/name URL")
    return url


def render_config(
    spec: BotSpec,
    files: BotFiles,
    *,
    port: int,
    credentials: ApiCredentials,
    simulator_url: str | None = None,
    process_throttle_secs: int = 5,
    initial_state: Literal["running", "paused", "stopped"] = "running",
    freqai_model: ModelRuntime | None = None,
    opener: CredentialOpener | None = None,
) -> BotConfig:
    """The Freqtrade config of bot ``files.bot_id`` from its spec (validated first).

    :param port: the bot's REST API port on 127.0.0.1 (from the :class:`PortPool`).
    :param credentials: the bot's fresh API credentials.
    :param simulator_url: the exchange simulator's base URL; needed when ``spec.exchange`` is ``simulator``.
    :param process_throttle_secs: seconds between two rounds of the bot's trading loop (Freqtrade wants
        a whole number).
    :param initial_state: Freqtrade's state once it has started (and after a ``reload_config``): ``paused``
        for a bot that must not enter trades.
    :param freqai_model: the FreqAI model installed for the bot (``trading_gateway/freqai``), if any. A bot
        with a ``freqai`` section or a model runs FreqAI as a receiving bot: the Freqfleet variant of the
        model's class (``LightGBMRegressor`` until a model arrives), the model's feature parameters, never
        training (:func:`shared.freqai.live.live_freqai_section`).
    :param opener: opens a live bot's exchange credentials, sealed to this gateway: they are in the clear only
        in the config this returns (written 0600 into the bot's folder).
    """
    validate_spec(spec)
    if not 1024 <= port <= 65535:
        raise BotConfigError(f"Freqtrade's API port must be in 1024-65535, not {port}")
    if process_throttle_secs < 1:
        raise BotConfigError(
            f"process_throttle_secs must be a whole number of seconds >= 1, not {process_throttle_secs}"
        )
    if len(credentials.jwt_secret) < 32:
        raise BotConfigError("Freqtrade wants a jwt secret of at least 32 characters")
    try:
        exchange = render_exchange_section(
            spec.exchange,
            spec.pairs,
            simulator_url=simulator_url if spec.exchange == SIMULATOR else None,
            credentials=_exchange_credentials(spec, files.bot_id, opener),
        )
    except ValueError as exc:
        raise BotConfigError(f"exchange {spec.exchange!r}: {exc}") from None
    db_url = _trade_database(spec, files, opener)

    data: dict[str, Any] = {
        "bot_name": files.bot_id,
        "strategy": spec.strategy_class,
        "initial_state": initial_state,
        "dry_run": spec.dry_run,
        "trading_mode": "spot",
        "margin_mode": "",
        "stake_currency": spec.stake_currency,
        "stake_amount": "unlimited" if spec.stake_amount == "unlimited" else _number(spec.stake_amount),
        "max_open_trades": spec.max_open_trades,
        "timeframe": spec.timeframe,
        "exchange": exchange,
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "force_entry_enable": True,
        "db_url": db_url,
        "internals": {"process_throttle_secs": process_throttle_secs},
        "api_server": {
            "enabled": True,
            "listen_ip_address": "127.0.0.1",
            "listen_port": port,
            "username": credentials.username,
            "password": credentials.password,
            "jwt_secret_key": credentials.jwt_secret,
            "ws_token": credentials.ws_token,
            "CORS_origins": [],
            "enable_openapi": False,
            "verbosity": "error",
        },
        "log_config": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"standard": {"format": LOG_FORMAT}},
            "handlers": {
                "file": {
                    "class": "logging.handlers.RotatingFileHandler",
                    "formatter": "standard",
                    "filename": str(files.log),
                    "maxBytes": LOG_MAX_BYTES,
                    "backupCount": LOG_BACKUPS,
                }
            },
            "root": {"handlers": ["file"], "level": "INFO"},
        },
        **offline_config(),
    }
    if spec.dry_run_wallet is not None:
        data["dry_run_wallet"] = _number(spec.dry_run_wallet)
    if spec.stoploss is not None:
        data["stoploss"] = spec.stoploss
    if spec.freqai is not None or freqai_model is not None:
        model_section = None if freqai_model is None else freqai_model.freqai
        data["freqai"] = live_freqai_section(spec.freqai, model_section, timeframe=spec.timeframe)
        data["freqaimodel"] = freqfleet_class(DEFAULT_MODEL if freqai_model is None else freqai_model.freqai_model)
        data["freqaimodel_path"] = str(FREQAIMODELS_DIR)
    data.pop("fiat_display_currency", None)  # it would make Freqtrade call CoinGecko
    return BotConfig(
        bot_id=files.bot_id,
        strategy_class=spec.strategy_class,
        port=port,
        credentials=credentials,
        db_url=db_url,
        dry_run=spec.dry_run,
        data=data,
    )


def market_url_in(config_path: Path) -> str | None:
    """The market-data base URL a running bot's config names (the simulator's or the relay's, without ``/api/v3``);
    None for a real exchange reached directly, or a config that can't be read."""
    try:
        with open_read_nofollow(config_path) as f:
            config = json.loads(f.read())
        public = config["exchange"]["ccxt_config"]["urls"]["api"]["public"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(public).removesuffix(PUBLIC_API_SUFFIX) if isinstance(public, str) else None
