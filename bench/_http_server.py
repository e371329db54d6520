"""Server side of ``bench.http_overhead``: one app under uvicorn, in its own process.

``python -m bench._http_server KIND --port N [--redis-url URL --data-dir DIR]`` where KIND is

- ``baseline``: a bare ``FastAPI()`` with one ``GET /health/live`` returning the gateway's JSON;
- ``gateway``: the trading gateway exactly as ``trading_gateway.main.run`` builds it (JSON logging
  configured first, then ``create_app``);
- ``gateway-logged``: the same gateway plus ``GET /bench/live``, a route outside the access log's
  quiet paths, so every request writes one JSON access-log line to stderr.

Every kind is served with the same uvicorn settings (``bench._common.serve``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi import FastAPI
from pydantic import SecretStr

from bench._common import serve
from shared.logging import configure_logging
from shared.settings import Environment, LogFormat
from trading_gateway.config import GatewaySettings
from trading_gateway.main import create_app

KINDS = ("baseline", "gateway", "gateway-logged")
LOGGED_PATH = "/bench/live"
LIVE_BODY = {"status": "ok", "service": "gateway"}


def baseline_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return dict(LIVE_BODY)

    return app


def gateway_app(redis_url: str, data_dir: Path, logged_route: bool) -> FastAPI:
    configure_logging("gateway", "INFO", LogFormat.json)
    settings = GatewaySettings(
        env=Environment.production,
        data_dir=data_dir,
        redis_url=SecretStr(redis_url),
        gateway_id="gw-bench",
        log_level="INFO",
        log_format=LogFormat.json,
    )
    app = create_app(settings)
    if logged_route:

        async def live_logged() -> dict[str, str]:
            return dict(LIVE_BODY)

        app.add_api_route(LOGGED_PATH, live_logged, methods=["GET"])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--data-dir", type=Path, default=Path(".freqfleet-bench"))
    args = parser.parse_args(argv)
    if args.kind == "baseline":
        app = baseline_app()
    else:
        app = gateway_app(args.redis_url, args.data_dir, logged_route=args.kind == "gateway-logged")
    serve(app, args.port)


if __name__ == "__main__":
    main()
