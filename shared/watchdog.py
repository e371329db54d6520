"""The lease watchdog inside a bot's process: a bot whose gateway stopped renewing its lease ends itself.

A gateway that can't renew its leases stops its bots itself (``trading_gateway/fleet/leases.py``). A gateway that is
frozen (a host paused, a process stopped, a kernel stalled) renews nothing and stops nothing, while its bots go on
and the management server starts them elsewhere once the leases end. So each bot carries this watchdog, installed
before Freqtrade's code runs by the fork launcher's child (``shared.launcher.child``) or, for an exec'd bot, by this
module's ``main`` (``python -I -m shared.watchdog --lease FILE --bot ID -- freqtrade trade ...``); never by the
strategy.

After each renewal the gateway writes the bot's lease file (``<gateway dir>/leases/<bot>/lease.json``: the bot may
read it, not write it) with the moment the renewal was asked for, on ``CLOCK_BOOTTIME`` (one clock for every process
of the host, and it counts a suspended host's time), and the lease's length. The watchdog's deadline is
``renewed_at + STOP_AT * ttl``: after the gateway's own stop (60 % of the lease) and well before the lease ends and
the bot may be started elsewhere. From that moment:

- no order leaves the process: Freqtrade's ``Exchange.create_order`` and ``create_stoploss`` end the process instead
  of sending one (nothing sent, so nothing for the next holder to miss);
- the next Freqtrade loop iteration (``FreqtradeBot.process``) ends the process before it does anything;
- a timer thread (every ``CHECK_EVERY`` of the lease, at most a second) ends it too, once no order is in flight, or
  at ``KILL_AT`` of the lease whatever it does (a loop stuck in a request).

The process ends with ``os._exit(EXIT_LEASE)``, after one line on stderr (its console) and in its log: no Freqtrade
cleanup, which may cancel open orders on the exchange that are now the next holder's. A missing or unreadable lease
file counts as a lease that ended: no lease, no trading.

A hostile strategy runs in this very process and could undo the watchdog; it would harm only its own bot (its
database writes are refused once the bot is moved: a new password, the old sessions ended).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

EXIT_LEASE = 75  # EX_TEMPFAIL: the gateway starts it again once a renewal says it still holds the bot
STOP_AT = 0.75  # of the lease after the renewal was asked for: no order, and the process ends
KILL_AT = 0.9  # of the lease: the process ends whatever it is doing
CHECK_EVERY = 0.05  # of the lease, and at most 1 s: the timer's period
LEASE_FILE = "lease.json"

log = logging.getLogger("freqfleet.watchdog")
F = TypeVar("F", bound=Callable[..., Any])


def now() -> float:
    """The host's boot clock (seconds): what the gateway writes ``renewed_at`` in."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def write_lease(path: Path, bot_id: str, renewed_at: float, ttl: float) -> None:
    """The gateway's side: the bot's lease file, replaced whole (a reader sees the old one or the new one); readable
    by the bot's uid, writable by the gateway only. No fsync: a host that crashes takes its bots with it."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"bot_id": bot_id, "renewed_at": renewed_at, "ttl": ttl}))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class Watchdog:
    def __init__(self, lease_file: Path, bot_id: str) -> None:
        self.lease_file = lease_file
        self.bot_id = bot_id
        self.closed = False  # past the deadline: no order leaves any more
        self.in_flight = 0  # orders being sent right now
        self._lock = threading.Lock()

    def read(self) -> tuple[float, float] | None:
        """(renewed_at, ttl) of the lease file; None when there is none that names this bot."""
        try:
            lease = json.loads(self.lease_file.read_text())
            if lease.get("bot_id") != self.bot_id:
                return None
            return float(lease["renewed_at"]), float(lease["ttl"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def remaining(self, at: float = STOP_AT) -> float:
        """Seconds until ``at`` of the lease has gone by since its last renewal (negative: past it)."""
        lease = self.read()
        if lease is None:
            return -1.0
        renewed_at, ttl = lease
        return renewed_at + at * ttl - now()

    def period(self) -> float:
        lease = self.read()
        return 0.25 if lease is None else max(0.05, min(1.0, CHECK_EVERY * lease[1]))

    def end(self, where: str) -> NoReturn:
        lease = self.read()
        since = "no lease file" if lease is None else f"last renewed {now() - lease[0]:.1f} s ago, lease {lease[1]:g} s"
        message = (
            f"freqfleet-watchdog: the gateway's lease on this bot was not renewed in time ({since}): exiting {where}"
        )
        try:
            print(message, file=sys.stderr, flush=True)  # its console: the gateway shows its last lines
            if logging.getLogger().handlers:  # Freqtrade's log (--logfile)
                log.critical(message)
                for handler in logging.getLogger().handlers:
                    handler.flush()
        finally:
            os._exit(EXIT_LEASE)

    def check(self, where: str) -> None:
        """End the process when the lease is past its deadline (a Freqtrade loop's start, an order)."""
        if self.closed or self.remaining() <= 0:
            self.closed = True
            self.end(where)

    def guard_order(self, send: F) -> F:
        """``send`` (an order to the exchange) checked first, and counted while it is in flight."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.check(f"instead of sending an order ({send.__name__})")
            with self._lock:
                self.in_flight += 1
            try:
                return send(*args, **kwargs)
            finally:
                with self._lock:
                    self.in_flight -= 1

        guarded.__wrapped__ = send  # type: ignore[attr-defined]
        guarded.__name__ = send.__name__
        return guarded  # type: ignore[return-value]

    def guard_loop(self, process: F) -> F:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.check("at the start of a Freqtrade loop")
            return process(*args, **kwargs)

        guarded.__wrapped__ = process  # type: ignore[attr-defined]
        guarded.__name__ = process.__name__
        return guarded  # type: ignore[return-value]

    def timer(self) -> None:
        while True:
            time.sleep(self.period())
            if self.remaining(KILL_AT) <= 0:
                self.end("(its deadline passed with an order in flight)")
            if self.closed or self.remaining() <= 0:
                self.closed = True
                if self.in_flight == 0:
                    self.end("(on its timer)")


def install(lease_file: str | Path, bot_id: str, *, timer: bool = True) -> Watchdog:
    """Wrap Freqtrade's loop and order calls and start the timer (``timer``: only a test does without); call before
    Freqtrade's entry point runs."""
    from freqtrade.exchange.exchange import Exchange  # type: ignore[import-untyped]
    from freqtrade.freqtradebot import FreqtradeBot  # type: ignore[import-untyped]

    watchdog = Watchdog(Path(lease_file), bot_id)
    exchange: Any = Exchange
    bot: Any = FreqtradeBot
    exchange.create_order = watchdog.guard_order(Exchange.create_order)
    exchange.create_stoploss = watchdog.guard_order(Exchange.create_stoploss)
    bot.process = watchdog.guard_loop(FreqtradeBot.process)
    if timer:
        threading.Thread(target=watchdog.timer, name="freqfleet-watchdog", daemon=True).start()
    return watchdog


def main(argv: Sequence[str] | None = None) -> int:
    """``python -I -m shared.watchdog --lease FILE --bot BOT_ID -- /path/to/freqtrade trade ...``: the watchdog, then
    Freqtrade's entry point with ``trade ...``, in this process. The command line stays as it is: it names
    ``trade`` and ``--config <the bot's config>`` as separate words, which is what ``ps`` users and the gateway's
    adoption (``trading_gateway/bots/adoption.py``) look for."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 6 or args[0] != "--lease" or args[2] != "--bot" or args[4] != "--":
        print("usage: python -m shared.watchdog --lease FILE --bot BOT_ID -- freqtrade trade ...", file=sys.stderr)
        return 2
    lease_file, bot_id, program = args[1], args[3], args[5:]
    from freqtrade.main import main as freqtrade_main  # type: ignore[import-untyped]

    install(lease_file, bot_id)
    sys.argv = program
    freqtrade_main(program[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
