"""Each bot in its sandbox: its own uid (recorded here), its folder handed to that uid, its policy.

- **Uids.** With the ``uid+landlock`` mode (the gateway runs as root) every bot gets an uid of its own,
  ``FREQFLEET_SANDBOX_UID_BASE + 1000 + n``, allocated on its first start and recorded in
  ``<gateway data dir>/sandbox-uids.json`` (0600), so a bot keeps its uid across restarts and gateways, and
  its files stay its own. The uid needs no ``/etc/passwd`` entry. Its gid is the same number.
- **Hand-over.** Before each spawn the bot's folder is given to that uid (``lchown``: a symlink the bot made
  is never followed) and stays 0700, its ``config.json`` 0600: readable by that bot alone (and the gateway).
- **Policy.** Read-write: its own folder (its FreqAI models are copies in it, see
  :mod:`trading_gateway.freqai.installs`). Read: the Python installation and the venv, Freqfleet's model
  classes, its lease file's folder (with leases on: :mod:`shared.watchdog`). TCP: bind its API port, connect to its
  exchange (the simulator's port, the relay's, or 443) and to its trade database's port when that is in PostgreSQL
  (:mod:`shared.trade_db`: its role reaches its database only). See :mod:`shared.sandbox.policy`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from shared.bus.messages import BotSpec
from shared.files import atomic_write
from shared.sandbox.host import HostSandbox, UnsandboxedRefused, exchange_ports, hand_over
from shared.sandbox.policy import Policy
from shared.trade_db import url_port
from trading_gateway.bots.files import BotConfig, BotConfigError, BotFiles

UIDS_FILE = "sandbox-uids.json"
BOT_UID_OFFSET = 1000
MAX_BOT_UIDS = 60000


class BotUids:
    """The uid of each bot of this gateway (allocated once, kept in a file)."""

    def __init__(self, root: Path, base: int) -> None:
        self.path = root / UIDS_FILE
        self.base = base + BOT_UID_OFFSET
        self._lock = threading.Lock()

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def get(self, bot_id: str) -> int:
        with self._lock:
            uids = self._load()
            if bot_id in uids:
                return uids[bot_id]
            taken = set(uids.values())
            uid = next(u for u in range(self.base, self.base + MAX_BOT_UIDS) if u not in taken)
            uids[bot_id] = uid
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(uids, indent=1, sort_keys=True).encode())
            return uid


def bot_policy(
    host: HostSandbox,
    files: BotFiles,
    config: BotConfig,
    spec: BotSpec,
    *,
    env: dict[str, str],
    uid: int | None,
    market_url: str | None,
    watchdog: bool = False,
) -> Policy | None:
    """The sandbox of one bot's process (None when the host has none); it may connect to ``market_url`` (the
    simulator or the gateway's relay) or, for a real exchange reached directly, to HTTPS; with ``watchdog`` it may
    read its lease file's folder."""
    database_port = url_port(config.db_url)  # its trade database in PostgreSQL, if there
    return host.policy(
        files.folder,
        env=env,
        uid=uid,
        read=[str(files.lease.parent)] if watchdog else [],
        bind_ports=[config.port],
        connect_ports=exchange_ports(market_url, spec.exchange) + ([] if database_port is None else [database_port]),
    )


class BotSandboxing:
    """What the gateway does for each spawn: refuse, or pick the uid, hand the folder over, build the policy."""

    def __init__(self, host: HostSandbox, root: Path) -> None:
        self.host = host
        self.uids = BotUids(root, host.uid_base)

    def prepare(
        self,
        files: BotFiles,
        config: BotConfig,
        spec: BotSpec,
        env: dict[str, str],
        *,
        market_url: str | None,
        watchdog: bool = False,
    ) -> Policy | None:
        """Call after the bot's files are written, right before the spawn.

        :raises BotConfigError: a plain user's strategy on a host without a sandbox (and no explicit allowance).
        """
        try:
            self.host.check_allowed(spec.strategy_trusted, f"bot {files.bot_id}")
        except UnsandboxedRefused as exc:
            raise BotConfigError(str(exc)) from None
        uid = self.uids.get(files.bot_id) if self.host.own_uids else None
        if uid is not None:
            hand_over(files.folder, uid)
        return bot_policy(
            self.host,
            files,
            config,
            spec,
            env=env,
            uid=uid,
            market_url=market_url,
            watchdog=watchdog,
        )
