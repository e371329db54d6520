"""Sources parsed from several threads at once all parse (CPython 3.11's ast.parse is not thread-safe)."""

from __future__ import annotations

import ast
import concurrent.futures
import gc
import sys
from collections.abc import Iterator

import pytest

from management_server.freqai.service import EXAMPLE_STRATEGY
from shared import python_source


class _Finalized:
    """Garbage in a cycle whose finalizer runs Python code: collected in the middle of a parse, it lets
    another thread run there, which is how two parses interleave (python/cpython#106905)."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        sum(range(200))


@pytest.fixture
def busy_interpreter() -> Iterator[None]:
    """Frequent collections and thread switches; ``ast.parse`` without the lock fails here within a second."""
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(50, 1, 1)
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("busy_interpreter")
def test_parses_from_many_threads_at_once_all_succeed() -> None:
    source = EXAMPLE_STRATEGY.read_text()
    expected = ast.dump(ast.parse(source))

    def parse_many(_: int) -> set[str]:
        dumps = set()
        for _ in range(300):
            for _ in range(30):
                _Finalized()
            dumps.add(ast.dump(python_source.parse(source, filename="strategy.py")))
        return dumps

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        dumps = set().union(*pool.map(parse_many, range(8)))
    assert dumps == {expected}


def test_a_syntax_error_is_raised_as_ast_parse_raises_it() -> None:
    with pytest.raises(SyntaxError) as caught:
        python_source.parse("def broken(:\n", filename="strategy.py")
    assert (caught.value.filename, caught.value.lineno) == ("strategy.py", 1)
