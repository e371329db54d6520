"""The dashboard's files and fleet rows go compressed (gzip, when the browser accepts it); nothing else does.

A first load of the page moves its scripts, the chart library and the fleet's rows (about 1 KB per bot): gzip
makes that several times smaller. The rest of the API is left as it is: compressing every small JSON answer
costs more CPU than it saves on a local network, and Server-Sent Events must not be buffered.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

COMPRESSED_PREFIXES = ("/ui/", "/api/v1/dashboard/fleet")


class DashboardCompression:
    def __init__(self, app: ASGIApp, minimum_size: int = 1024) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/" or path.startswith(COMPRESSED_PREFIXES):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
