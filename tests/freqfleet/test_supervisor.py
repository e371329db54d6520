"""The supervisor with real child processes: restart with backoff, stop takes the whole group."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from freqfleet.supervisor import ChildSpec, Supervisor
from tests.helpers import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_child_that_dies_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    crasher = [sys.executable, "-c", f"open({str(counter)!r}, 'a').write('x'); raise SystemExit(3)"]
    sup = Supervisor([ChildSpec("crasher", crasher, {})], min_backoff=0.05, max_backoff=0.2)
    sup.start_all()
    try:

        def three_starts() -> bool:
            sup.check()
            return counter.exists() and len(counter.read_text()) >= 3

        wait_for(three_starts, timeout=30, interval=0.02, what="three starts")
        child = sup.children[0]
        assert child.restarts >= 2
        assert set(child.exit_codes) == {3}
        assert 0.05 <= child.backoff <= 0.2
    finally:
        sup.stop_all(grace=5)


def test_stop_all_terminates_children_and_their_groups(tmp_path: Path) -> None:
    # A child that starts a grandchild in its own group, like a Celery worker's pool.
    parent = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); time.sleep(600)",
    ]
    sup = Supervisor([ChildSpec("sleeper", SLEEPER, {}), ChildSpec("parent", parent, {})])
    sup.start_all()
    parent_proc = psutil.Process(sup.children[1].pid or 0)
    grandchildren = wait_for(lambda: parent_proc.children(), timeout=10, what="the grandchild")
    pids = [c.pid for c in sup.children if c.pid] + [g.pid for g in grandchildren]

    sup.stop_all(grace=2)

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(p) for p in pids), timeout=10, what="all processes gone")
    assert all(c.proc is None for c in sup.children)


def test_children_can_be_started_in_steps() -> None:
    """``up`` starts the exchange simulator first, then the rest: no child is started twice."""
    sup = Supervisor([ChildSpec("first", SLEEPER, {}), ChildSpec("second", SLEEPER, {})])
    try:
        sup.start("first")
        first_pid = sup.children[0].pid
        assert first_pid is not None
        assert sup.children[1].proc is None
        sup.check()
        assert sup.children[1].proc is None  # check() starts nobody who was never started
        sup.start_all()
        assert sup.children[0].pid == first_pid
        assert sup.children[1].pid is not None
        with pytest.raises(KeyError, match="no such child: third"):
            sup.start("third")
    finally:
        sup.stop_all(grace=5)
