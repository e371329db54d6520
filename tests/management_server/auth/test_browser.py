"""The dashboard's session: the refresh token in an HttpOnly, SameSite=Strict cookie, CSRF on refresh and logout."""

from __future__ import annotations

import httpx

from management_server.auth.browser import COOKIE_PATH, CSRF_COOKIE, CSRF_HEADER, REFRESH_COOKIE
from management_server.config import ManagementSettings
from management_server.main import create_app
from shared.settings import Environment
from tests.helpers import serve
from tests.management_server.conftest import PASSWORD, Management, bearer


def cookies_set(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie of the answer by cookie name, lower-cased."""
    return {line.split("=", 1)[0]: line.lower() for line in response.headers.get_list("set-cookie")}


async def log_in(client: httpx.AsyncClient, email: str = "alice@example.com") -> httpx.Response:
    return await client.post("/api/v1/auth/session", data={"username": email, "password": PASSWORD})


async def test_a_session_keeps_its_refresh_token_where_no_script_reads_it(management: Management) -> None:
    await management.create_user("alice@example.com")
    async with httpx.AsyncClient(base_url=management.url) as page:
        started = await log_in(page)
        assert started.status_code == 200, started.text
        body = started.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "csrf_token"}  # no refresh token in sight
        refresh, csrf = cookies_set(started)[REFRESH_COOKIE], cookies_set(started)[CSRF_COOKIE]
        assert {"httponly", "samesite=strict", f"path={COOKIE_PATH}"} <= set(refresh.split("; "))
        assert "secure" not in refresh  # the test server is plain HTTP (env=test)
        assert "samesite=strict" in csrf
        assert "httponly" not in csrf  # the page reads this one
        me = await page.get("/api/v1/users/me", headers=bearer(body["access_token"]))
        assert me.json()["email"] == "alice@example.com"

        # Refreshing needs the CSRF value: a page of another site can neither read it nor send it.
        assert (await page.post("/api/v1/auth/session/refresh")).status_code == 403
        wrong = await page.post("/api/v1/auth/session/refresh", headers={CSRF_HEADER: "guess"})
        assert wrong.status_code == 403
        old_cookie = page.cookies.get(REFRESH_COOKIE)
        renewed = await page.post("/api/v1/auth/session/refresh", headers={CSRF_HEADER: body["csrf_token"]})
        assert renewed.status_code == 200, renewed.text
        assert page.cookies.get(REFRESH_COOKIE) != old_cookie  # rotated
        again = renewed.json()
        assert (await page.get("/api/v1/users/me", headers=bearer(again["access_token"]))).status_code == 200

        # The old refresh cookie, presented again (stolen), ends the login everywhere.
        async with httpx.AsyncClient(base_url=management.url) as thief:
            thief.cookies.set(REFRESH_COOKIE, old_cookie or "", path=COOKIE_PATH)
            thief.cookies.set(CSRF_COOKIE, "x")
            stolen = await thief.post("/api/v1/auth/session/refresh", headers={CSRF_HEADER: "x"})
        assert stolen.status_code == 401
        assert stolen.json()["detail"] == "Your session has ended: log in again."
        after = await page.post("/api/v1/auth/session/refresh", headers={CSRF_HEADER: again["csrf_token"]})
        assert after.status_code == 401


async def test_logging_out_ends_the_session_and_clears_its_cookies(management: Management) -> None:
    await management.create_user("alice@example.com")
    async with httpx.AsyncClient(base_url=management.url) as page:
        body = (await log_in(page)).json()
        headers = bearer(body["access_token"]) | {CSRF_HEADER: body["csrf_token"]}
        assert (await page.delete("/api/v1/auth/session", headers=bearer(body["access_token"]))).status_code == 403
        ended = await page.delete("/api/v1/auth/session", headers=headers)
        assert ended.status_code == 204
        assert all("max-age=0" in line for line in cookies_set(ended).values())
        assert (await page.get("/api/v1/users/me", headers=bearer(body["access_token"]))).status_code == 401
        assert (await page.post("/api/v1/auth/session/refresh", headers=headers)).status_code in (401, 403)
    assert [e.outcome for e in await management.audit("auth.logout")] == ["success"]


async def test_outside_development_the_cookies_are_secure(management_settings: ManagementSettings) -> None:
    settings = management_settings.model_copy(update={"env": Environment.production})
    app = create_app(settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as page:
        management = Management(app, url, page, settings)
        await management.create_user("alice@example.com")
        started = await log_in(page)
    assert started.status_code == 200, started.text
    assert all("; secure" in line for line in cookies_set(started).values())
