"""Server side of ``bench.auth``: one app under uvicorn, in its own process.

``python -m bench._auth_server KIND --port N`` where KIND is

- ``bare``: a bare ``FastAPI()`` with ``GET /bench/bare`` returning a small JSON object, and ``POST /bench/bare``
  returning the same (the baseline of POST routes);
- ``management``: the management server exactly as ``management_server.main.run`` builds it: settings
  from the ``FREQFLEET_*`` environment (the benchmark sets the database, Redis, data folder and turns
  the request rate limits off), JSON logging configured first, then ``create_app``.

Both kinds are served with the same uvicorn settings (``bench._common.serve``).
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from bench._common import serve

KINDS = ("bare", "management")
BARE_PATH = "/bench/bare"
BARE_BODY = {"status": "ok", "service": "bench"}


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get(BARE_PATH)
    async def bare() -> dict[str, str]:
        return dict(BARE_BODY)

    @app.post(BARE_PATH)
    async def bare_post() -> dict[str, str]:
        return dict(BARE_BODY)

    return app


def management_app() -> FastAPI:
    from management_server.config import get_settings
    from management_server.main import create_app
    from shared.logging import configure_logging

    settings = get_settings()
    configure_logging("management", settings.log_level, settings.log_format)
    return create_app(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = bare_app() if args.kind == "bare" else management_app()
    serve(app, args.port)


if __name__ == "__main__":
    main()
