"""The page and its files: served by the management server with a policy of their own, compressed; the API not."""

from __future__ import annotations

from management_server.dashboard.router import STATIC
from shared.security_headers import DASHBOARD_CSP, STRICT_CSP
from tests.management_server.bots.test_bots_api import session_of
from tests.management_server.conftest import Management

GZIP = {"Accept-Encoding": "gzip"}


async def test_the_page_and_its_files_are_served_compressed_under_their_own_policy(management: Management) -> None:
    page = await management.client.get("/", headers=GZIP)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == DASHBOARD_CSP
    assert "'unsafe-inline'" not in DASHBOARD_CSP
    assert '<script type="module" src="/ui/app.js"></script>' in page.text

    for name in ("app.js", "api.js", "views/fleet.js", "vendor/uplot/uPlot.iife.min.js", "style.css"):
        served = await management.client.get(f"/ui/{name}", headers=GZIP)
        assert served.status_code == 200, name
        assert served.headers["content-encoding"] == "gzip", name
        assert served.content == (STATIC / name).read_bytes()  # httpx decompressed it
        assert served.headers["content-security-policy"] == DASHBOARD_CSP
    assert (await management.client.get("/ui/../main.py")).status_code == 404  # nothing outside its folder

    alice = await session_of(management, "alice@example.com")
    me = await management.client.get("/api/v1/users/me", headers=alice | GZIP)
    assert "content-encoding" not in me.headers  # the API's answers go as they are
    assert me.headers["content-security-policy"] == STRICT_CSP
