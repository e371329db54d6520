"""Run every benchmark in ``bench/`` and print its results: ``python -m bench.run [--quick] [NAME ...]``.

A benchmark is a module of this package whose name does not start with ``_`` and which defines
``run(quick: bool) -> None``; it prints its own figures, measured against a baseline in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules, sorted."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(PACKAGE_DIR)])
        if not m.name.startswith("_") and m.name != "run" and not m.ispkg
    )


def load(name: str) -> Callable[[bool], None]:
    module = importlib.import_module(f"bench.{name}")
    entry = getattr(module, "run", None)
    if not callable(entry):
        raise TypeError(f"bench.{name} has no run(quick) function")
    run_benchmark: Callable[[bool], None] = entry
    return run_benchmark


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds: a smoke run, noisier figures")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {available})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    names = args.names or available

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"freqfleet benchmarks{' (quick)' if args.quick else ''}: {', '.join(names)}")
    print(f"{now}; {os.cpu_count()} cores; Python {platform.python_version()} on {platform.platform()}")
    failed: list[str] = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        try:
            load(name)(args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - started:.1f}s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
