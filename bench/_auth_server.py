"""Server side of ``bench.auth``: one app under uvicorn, in its own process.

``python -m bench._auth_server KIND --port N`` where KIND is

- ``bare``: a bare ``FastAPI()`` with ``GET /bench/bare`` returning a small JSON object, ``POST /bench/bare``
  returning the same (the baseline of POST routes), and ``GET /bench/bots?owner=&limit=``, the fair baseline of
  ``GET /api/v1/bots``: the same SELECT of the same columns with asyncpg (a pool on ``FREQFLEET_DATABASE_URL``)
  and the same JSON (``BotOut``), with no authentication, ORM or middleware;
- ``management``: the management server exactly as ``management_server.main.run`` builds it: settings
  from the ``FREQFLEET_*`` environment (the benchmark sets the database, Redis, data folder and turns
  the request rate limits off), JSON logging configured first, then ``create_app``.

Both kinds are served with the same uvicorn settings (``bench._common.serve``); ``--workers N`` serves the
management server in N processes as ``FREQFLEET_MANAGEMENT_WORKERS`` does (``shared.http.serve_workers``).
``--profile PATH`` runs the server under cProfile and writes its statistics to PATH when it stops
(``python -m bench.api --profile``).
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from bench._common import serve

KINDS = ("bare", "management")
BARE_PATH = "/bench/bare"
BARE_BODY = {"status": "ok", "service": "bench"}


BOTS_PATH = "/bench/bots"


def bare_app() -> FastAPI:
    import json
    import os
    import uuid
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from typing import Any

    import asyncpg
    from fastapi import Response
    from pydantic import TypeAdapter

    from management_server.bots.schemas import BotOut

    adapter = TypeAdapter(list[BotOut])
    derived = {  # what BotOut shows that is not a column as it is
        "placement": "CASE WHEN pinned_gateway_id IS NULL THEN NULL "
        "ELSE jsonb_build_object('gateway_id', pinned_gateway_id) END AS placement",
    }
    columns = tuple(derived.get(name, name) for name in BotOut.model_fields)
    query = (
        f"SELECT {', '.join(columns)} FROM bots WHERE owner_id = $1 "  # noqa: S608 (our own column names)
        "ORDER BY created_at, id LIMIT $2"
    )
    pools: dict[str, Any] = {}

    async def _json(conn: Any) -> None:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        url = os.environ.get("FREQFLEET_DATABASE_URL")
        if url:
            dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
            pools["db"] = await asyncpg.create_pool(dsn, min_size=1, max_size=10, init=_json)
        yield
        if "db" in pools:
            await pools["db"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get(BOTS_PATH)
    async def bots(owner: str, limit: int = 100) -> Response:
        rows = await pools["db"].fetch(query, uuid.UUID(owner), limit)
        return Response(
            adapter.dump_json(adapter.validate_python([dict(r) for r in rows])), media_type="application/json"
        )

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
    parser.add_argument(
        "--workers", type=int, default=1, help="management: worker processes (as FREQFLEET_MANAGEMENT_WORKERS)"
    )
    args = parser.parse_args(argv)
    if args.kind == "management" and args.workers > 1:
        from management_server.config import get_settings
        from shared.http import serve_workers

        data_dir = get_settings().data_dir
        serve_workers("bench._auth_server:management_app", "127.0.0.1", args.port, args.workers, data_dir)
        return
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
