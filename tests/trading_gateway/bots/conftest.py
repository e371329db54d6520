"""Fixtures for the bot process layer: one exchange simulator process per package, bot folders
whose Freqtrade processes are always killed afterwards, a spec with the always-enter strategy."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tests.exchange_simulator
from shared.bus.messages import BotSpec
from trading_gateway.bots.adoption import find_orphans
from trading_gateway.bots.ports import PortPool

ALWAYS_ENTER = Path(tests.exchange_simulator.__file__).parent / "strategies" / "AlwaysEnter.py"
THROTTLE = 1  # seconds between rounds of the bots' trading loop
START_TIMEOUT = 60.0
GRACE = 10.0


# AlwaysEnter with market orders: a dry-run limit order waits while the price has moved away from it,
# and forceexit deletes a trade whose entry has not filled. Market orders fill at once.
ALWAYS_ENTER_MARKET = ALWAYS_ENTER.read_text().replace(
    "    can_short = False\n",
    "    can_short = False\n"
    '    order_types: ClassVar[dict[str, object]] = {"entry": "market", "exit": "market", "stoploss": "market", '
    '"stoploss_on_exchange": False}\n',
)
assert "order_types" in ALWAYS_ENTER_MARKET


def make_spec(pairs: tuple[str, ...] = ("BTC/USDT",), **overrides: Any) -> BotSpec:
    fields: dict[str, Any] = {
        "name": "test bot",
        "strategy_class": "AlwaysEnter",
        "strategy_source": ALWAYS_ENTER.read_text(),
        "pairs": list(pairs),
        "timeframe": "1m",
        "stake_currency": "USDT",
        "stake_amount": Decimal(100),
        "max_open_trades": len(pairs),
        "dry_run_wallet": Decimal(10_000),
        "stoploss": -0.3,
    }
    return BotSpec(**(fields | overrides))


def new_bot_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def bots_root(tmp_path: Path) -> Iterator[Path]:
    """The test's bots folder; every Freqtrade process running a config in it is killed afterwards."""
    root = tmp_path / "bots"
    try:
        yield root
    finally:
        for orphan in find_orphans(root):  # checks each process's command line: only our bots
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)


def _below_ephemeral_ports() -> int:
    """The first port the kernel may give an outgoing connection: ports above it come and go by themselves."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


@pytest.fixture
def pool() -> PortPool:
    """A port range of its own for the test (other test runs may share this machine), below the ephemeral
    range, so no outgoing connection of the suite takes one of its ports in the middle of the test."""
    start = random.randrange(10_000, _below_ephemeral_ports() - 100, 100)
    return PortPool(start, start + 49)
