"""Server side of ``bench.auth``: one app under uvicorn, in its own process.

``python -m bench._auth_server KIND --port N`` where KIND is

- ``bare``: a bare ``FastAPI()`` with ``GET /bench/bare`` returning a small JSON object, and ``POST /bench/bare``
  returning the same (the baseline of POST routes);
- ``management``: the management server exactly as ``management_server.main.run`` builds it: settings
  from the ``FREQFLEET_*`` environment (the benchmark sets the database, Redis, data folder and turns
  the request rate limits off), JSON logging configured first, then ``create_app``.

Both kinds are served with the same uvicorn settings (``bench._common.serve``). ``--profile PATH`` runs the server
under cProfile and writes its statistics to PATH when it stops (``python -m bench.api --profile``).
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
    parser.add_argument("--profile", help="write cProfile statistics of the serving to this file when it stops")
    args = parser.parse_args(argv)
    app = bare_app() if args.kind == "bare" else management_app()
    if args.profile is None:
        serve(app, args.port)
        return
    import cProfile
    import signal

    # uvicorn raises the SIGTERM it caught again once it has shut down; let that one end serve() normally, so the
    # statistics are written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        serve(app, args.port)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
