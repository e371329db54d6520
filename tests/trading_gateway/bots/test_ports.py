"""The port pool: ports held by our bots or bound by other programs are never handed out."""

from __future__ import annotations

import socket

import pytest

from trading_gateway.bots.ports import NoFreePort, PortPool, can_bind


def _squat(port: int, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    if listen:
        sock.listen()
    return sock


def test_a_port_another_program_holds_is_skipped(pool: PortPool) -> None:
    first = pool.start
    with _squat(first, listen=True), _squat(first + 1, listen=False):
        assert not can_bind(first)
        port = pool.acquire("bot-a")
    assert port == first + 2
    assert pool.holder(port) == "bot-a"


def test_ports_are_handed_out_once_and_round_robin(pool: PortPool) -> None:
    a, b = pool.acquire("bot-a"), pool.acquire("bot-b")
    assert a != b
    assert pool.held == {a: "bot-a", b: "bot-b"}
    pool.release(a)
    c = pool.acquire("bot-c")
    assert c not in (a, b)  # a port just released is the last to come back
    d = pool.acquire("bot-c")  # a bot asking again gets a port and gives back its old one
    assert pool.held == {b: "bot-b", d: "bot-c"}


def test_claim_marks_an_adopted_bots_port_without_binding(pool: PortPool) -> None:
    with _squat(pool.start, listen=True):  # the adopted bot is listening on it
        pool.claim(pool.start, "bot-a")
    assert pool.holder(pool.start) == "bot-a"
    assert pool.acquire("bot-b") != pool.start
    with pytest.raises(ValueError, match="already held by bot bot-a"):
        pool.claim(pool.start, "bot-b")
    pool.release_bot("bot-a")
    assert pool.holder(pool.start) is None


def _free_port_beside_a_squatted_one() -> tuple[int, socket.socket]:
    """A free port whose next port another program (the returned socket) listens on."""
    for _ in range(100):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        start = int(probe.getsockname()[1])
        try:
            squatter = _squat(start + 1, listen=True)
        except OSError:
            continue  # the next port is taken by someone else: try another pair
        finally:
            probe.close()
        return start, squatter
    raise AssertionError("no free pair of adjacent ports on this machine")


def test_an_exhausted_pool_says_what_to_do() -> None:
    start, squatter = _free_port_beside_a_squatted_one()
    pool = PortPool(start, start + 1)
    pool.acquire("bot-a")
    with squatter, pytest.raises(NoFreePort) as caught:
        pool.acquire("bot-b")
    message = str(caught.value)
    assert f"no free port for bot bot-b in {start}-{start + 1}" in message
    assert "1 held by this gateway's bots, 1 in use by other programs" in message
    assert "FREQFLEET_BOT_PORT_RANGE_START" in message


def test_a_bad_range_is_refused() -> None:
    with pytest.raises(ValueError, match="bad bot port range"):
        PortPool(80, 90)
    with pytest.raises(ValueError, match="bad bot port range"):
        PortPool(20_010, 20_000)
