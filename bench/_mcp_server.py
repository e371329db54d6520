"""Server side of ``bench.mcp``: the trading gateway exactly as ``trading_gateway.main.run`` builds it.

``python -m bench._mcp_server --port N``: settings from the ``FREQFLEET_*`` environment (the benchmark
sets Redis, the data folder, the gateway id and the management server's URL), JSON logging configured
first, then ``create_app``, served with the uvicorn settings of ``bench._http_server``.
"""

from __future__ import annotations

import argparse

import uvicorn

from shared.logging import configure_logging
from trading_gateway.config import get_settings
from trading_gateway.main import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        workers=1,
        ws_max_size=settings.mcp_max_message_bytes,  # as `freqfleet gateway` runs it
    )


if __name__ == "__main__":
    main()
