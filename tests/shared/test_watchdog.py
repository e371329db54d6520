"""The lease watchdog (shared/watchdog.py) in a process of its own, with Freqtrade's real classes: it lives while its
lease file is renewed, ends itself (exit 75, saying why) once it is not, before the lease ends; after the deadline no
order is sent and no Freqtrade loop begins; a missing lease file, or one naming another bot, is no lease. (A real
bot under it, forked and exec'd: tests/trading_gateway/bots/test_launcher.py, test_process.py; a frozen gateway's bots:
tests/e2e/test_failover.py.)"""

from __future__ import annotations

import os
import signal
import sys
import time
import types
from pathlib import Path

from shared.watchdog import EXIT_LEASE, KILL_AT, STOP_AT, install, now, write_lease

BOT = "bot-1"


class Driven:
    """A process forked from this one (Freqtrade is imported here once) with the watchdog installed, timer included,
    that waits for orders: ``order`` calls Freqtrade's real ``Exchange.create_order`` on a dry-run stand-in of an
    exchange (answer ``SENT`` when it gets through), ``loop`` calls ``FreqtradeBot.process`` on nothing (``LOOP``: an
    AttributeError past the guard). Its stderr is kept."""

    def __init__(self, lease: Path, bot_id: str = BOT) -> None:
        import freqtrade.freqtradebot  # noqa: F401 (imported before the fork, not in the child)
        from freqtrade.exchange.exchange import Exchange

        self.stderr_path = lease.parent / f"stderr-{time.monotonic_ns()}"
        orders_r, self._orders = os.pipe()
        self._answers, answers_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            try:
                os.close(self._orders)
                os.close(self._answers)
                err = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT, 0o600)
                os.dup2(err, 2)
                sys.stderr = os.fdopen(2, "w")  # pytest's capture had it
                install(lease, bot_id)
                from freqtrade.freqtradebot import FreqtradeBot

                exchange = types.SimpleNamespace(
                    _config={"dry_run": True},
                    price_to_precision=lambda pair, rate: rate,
                    create_dry_run_order=lambda *args: os.write(answers_w, b"SENT\n"),
                )
                with os.fdopen(orders_r) as orders:
                    for line in orders:
                        if line.strip() == "order":
                            Exchange.create_order(
                                exchange, pair="BTC/USDT", ordertype="limit", side="buy", amount=1, rate=1, leverage=1
                            )
                        elif line.strip() == "loop":
                            try:
                                FreqtradeBot.process(None)
                            except AttributeError:
                                os.write(answers_w, b"LOOP\n")
            finally:
                os._exit(0)
        os.close(orders_r)
        os.close(answers_w)
        self.answers = os.fdopen(self._answers)

    def ask(self, what: str) -> str:
        """The answer; "" when the process ended instead."""
        try:
            os.write(self._orders, what.encode() + b"\n")
        except BrokenPipeError:
            return ""
        return self.answers.readline().strip()

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        raise AssertionError(f"still running after {timeout} s")

    def said(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self._orders)
        self.answers.close()


def test_a_renewed_lease_keeps_the_bot_and_an_unrenewed_one_ends_it_before_the_lease_ends(tmp_path: Path) -> None:
    lease, ttl = tmp_path / "leases" / BOT / "lease.json", 3.0
    write_lease(lease, BOT, now(), ttl)
    process = Driven(lease)
    try:
        until = time.monotonic() + 1.5 * ttl  # longer than the lease: renewed every fifth of it
        while time.monotonic() < until:
            write_lease(lease, BOT, now(), ttl)
            assert process.alive()
            assert process.ask("order") == "SENT"
            assert process.ask("loop") == "LOOP"
            time.sleep(ttl / 5)
        renewed_at = now()
        write_lease(lease, BOT, renewed_at, ttl)  # the last renewal
        code = process.wait(timeout=3 * ttl)
        ended = now() - renewed_at
        said = process.said()
    finally:
        process.close()
    assert code == EXIT_LEASE
    assert STOP_AT * ttl <= ended < ttl  # after its deadline (it waited for the renewals), before the lease ended
    assert "freqfleet-watchdog: the gateway's lease on this bot was not renewed in time" in said
    assert "(on its timer)" in said


def test_past_the_deadline_no_order_is_sent_and_no_loop_begins(tmp_path: Path) -> None:
    lease, ttl = tmp_path / "lease.json", 3600.0  # a long lease: the timer checks once a second
    for ask, said in (("order", "instead of sending an order (create_order)"), ("loop", "at the start of a Freqtrade")):
        write_lease(lease, BOT, now(), ttl)
        process = Driven(lease)
        try:
            assert process.ask(ask) in ("SENT", "LOOP")
            write_lease(lease, BOT, now() - ttl, ttl)  # long past its deadline (the renewals stopped)
            answer = process.ask(ask)  # asked at once: before the timer's next look
            code = process.wait(timeout=10)
            assert said in process.said()
        finally:
            process.close()
        assert answer == ""  # nothing sent, no loop ran: the process ended instead
        assert code == EXIT_LEASE


def test_no_lease_file_or_another_bots_is_no_lease(tmp_path: Path) -> None:
    lease = tmp_path / "lease.json"
    write_lease(lease, "another-bot", now(), 3600.0)
    process = Driven(lease)
    try:
        assert process.ask("order") == ""
        assert process.wait(timeout=10) == EXIT_LEASE
    finally:
        process.close()
    lease.unlink()
    process = Driven(lease)
    try:
        assert process.ask("loop") == ""
        assert process.wait(timeout=10) == EXIT_LEASE
        assert "no lease file" in process.said()
    finally:
        process.close()


def test_install_wraps_freqtrades_own_order_and_loop_calls(tmp_path: Path) -> None:
    """The names the watchdog wraps are Freqtrade's (an upgrade that renames them fails here); a renewed lease leaves
    the wrapped calls as they were."""
    from freqtrade.exchange.exchange import Exchange
    from freqtrade.freqtradebot import FreqtradeBot

    originals = (Exchange.create_order, Exchange.create_stoploss, FreqtradeBot.process)
    lease = tmp_path / "lease.json"
    write_lease(lease, BOT, now(), 3600.0)
    try:
        watchdog = install(lease, BOT, timer=False)  # no timer thread that could end this test's process
        assert (Exchange.create_order.__wrapped__, Exchange.create_stoploss.__wrapped__) == originals[:2]
        assert FreqtradeBot.process.__wrapped__ is originals[2]
        assert 0 < watchdog.remaining() <= STOP_AT * 3600.0
        assert watchdog.remaining(KILL_AT) > watchdog.remaining()
    finally:
        Exchange.create_order, Exchange.create_stoploss, FreqtradeBot.process = originals
