"""Following a bot's log: what is new between two reads of its last lines, and when some were missed."""

from __future__ import annotations

from management_server.bots.logs import new_lines


def test_new_lines_follow_the_last_ones_sent() -> None:
    assert new_lines([], ["a", "b"]) == (["a", "b"], False)
    assert new_lines(["a", "b"], ["a", "b", "c", "d"]) == (["c", "d"], False)
    assert new_lines(["c", "d"], ["a", "b", "c", "d"]) == ([], False)  # a larger window than the first read
    assert new_lines(["x", "y"], ["y", "z"]) == (["y", "z"], True)  # its end left the window: a gap, said
    # The same line twice: the latest place of the last lines sent counts.
    assert new_lines(["tick", "tick"], ["tick", "tick", "tick", "new"]) == (["new"], False)
