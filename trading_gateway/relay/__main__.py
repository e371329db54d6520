"""``python -m trading_gateway.relay``: the market-data relay, started and kept alive by its gateway.

It dies with its gateway (``PR_SET_PDEATHSIG``): a gateway that comes back starts a fresh one on the same port.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

import uvicorn

from shared.logging import configure_logging, get_logger
from trading_gateway.relay.adapters import adapter_for
from trading_gateway.relay.budget import Budget
from trading_gateway.relay.server import Relay, Upstream

PR_SET_PDEATHSIG = 1
log = get_logger(__name__)


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the gateway died before the line above
        sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trading_gateway.relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", default=[], help="exchange=base URL (repeatable)")
    parser.add_argument("--gateway-id", required=True)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--share", type=float, default=0.9, help="share of the exchange's limit the relay uses")
    parser.add_argument("--max-wait", type=float, default=5.0, help="longest wait for the budget, in seconds")
    parser.add_argument("--parent", type=int, default=0, help="the gateway's pid: the relay dies with it")
    args = parser.parse_args(argv)
    configure_logging("relay")
    if args.parent:
        _die_with(args.parent)
    upstreams = {}
    for item in args.upstream:
        exchange, _, url = item.partition("=")
        adapter = adapter_for(exchange)
        if adapter is None or not url:
            parser.error(f"no relay adapter for {exchange!r} (or no URL): {item}")
        upstreams[exchange] = Upstream(
            exchange, adapter, url, Budget(adapter.limit, share=args.share, max_wait=args.max_wait)
        )
    relay = Relay(upstreams, cache_bytes=args.cache_mb * 1024 * 1024, gateway_id=args.gateway_id)
    log.info("relay starting", port=args.port, exchanges=sorted(upstreams), pid=os.getpid())
    uvicorn.run(relay.app(), host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
