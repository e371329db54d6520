"""The strategy lint on adversarial sources: thread CPU of ``validate_strategy`` against ``ast.parse`` alone.

``python -m bench.run lint``. Each source is at most 256 KiB (the upload limit); the baseline is Python's own
parser on the same text, in the same run, so the ratio says what the lint adds to parsing. The goal of issue #14:
every source handled in under 1 s of a worker thread (the lint runs in a thread pool, off the event loop).
"""

from __future__ import annotations

import ast
import contextlib
import statistics
import time
from pathlib import Path

from management_server.strategies.validation import MAX_SOURCE_BYTES, validate_strategy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "strategies"


def corpus() -> dict[str, str]:
    sources = {
        "deep nesting": "x = " + "(" * 200_000 + ")" * 200_000,
        "'-' x 100000": "-" * 100_000 + "1",
        "20k eval names": "\n".join(f"e{i} = eval" for i in range(20_000)),
        "60k attributes": "x = [" + ",".join("a.b" for _ in range(60_000)) + "]",
        "40k calls": "x = [" + ",".join("f()" for _ in range(40_000)) + "]",
    }
    real = sorted(EXAMPLE.glob("*.py"))
    if real:
        sources["a real strategy"] = real[0].read_text()
    return {name: text[:MAX_SOURCE_BYTES] for name, text in sources.items()}


def _cpu(fn: object, text: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        with contextlib.suppress(SyntaxError, ValueError, MemoryError, RecursionError):
            fn(text)  # type: ignore[operator]
        times.append(time.thread_time() - started)
    return statistics.median(times)


def run(quick: bool) -> None:
    rounds = 3 if quick else 7
    print(f"{'source':<18} {'bytes':>7} {'ast.parse':>10} {'lint':>9} {'ratio':>6}  (thread CPU, median of {rounds})")
    for name, text in corpus().items():
        parse, lint = _cpu(ast.parse, text, rounds), _cpu(validate_strategy, text, rounds)
        ratio = lint / parse if parse > 0.0005 else float("nan")
        print(f"{name:<18} {len(text.encode()):>7} {parse * 1000:>8.1f}ms {lint * 1000:>7.1f}ms {ratio:>6.2f}")


if __name__ == "__main__":
    run(False)
