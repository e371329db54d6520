"""The daily-work commands' client of the management server's API (like ``freqtrade-client`` or ``kubectl``).

``freqfleet login`` keeps the login's refresh token (and the current access token) in the user's config folder,
``$XDG_CONFIG_HOME/freqfleet/credentials.json`` (``~/.config`` by default), mode 0600, one entry per server URL.
Every command then asks for a new access token by itself when the current one is about to end (the refresh
token rotates: the new one is stored). The server is ``--url``, else ``FREQFLEET_URL``, else the last one logged
in to, else ``http://127.0.0.1:8000``. Every failure is a :class:`ClientError` with one line a person can act
on, never a traceback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
RENEW_BEFORE = 30.0  # seconds before its end an access token is renewed
TIMEOUT = 60.0


class ClientError(Exception):
    """One line saying what went wrong and, where it can, what to do."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "freqfleet"


def credentials_file() -> Path:
    return config_dir() / "credentials.json"


def _load() -> dict[str, Any]:
    try:
        data = json.loads(credentials_file().read_text())
    except FileNotFoundError:
        return {"servers": {}}
    except (OSError, ValueError) as exc:
        raise ClientError(f"{credentials_file()} can't be read ({exc}): remove it and log in again") from None
    return data if isinstance(data, dict) and isinstance(data.get("servers"), dict) else {"servers": {}}


def _save(data: dict[str, Any]) -> None:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(temporary, path)


def server_url(given: str | None) -> str:
    url = given or os.environ.get("FREQFLEET_URL") or _load().get("current") or DEFAULT_URL
    return str(url).rstrip("/")


def _detail(response: httpx.Response) -> str:
    """The server's reason, in one line (a 422's problems joined)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().replace("\n", " ")[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for problem in detail[:5]:
            if isinstance(problem, dict):
                where = ".".join(str(p) for p in problem.get("loc", []) if p != "body")
                parts.append(f"{where}: {problem.get('msg')}" if where else str(problem.get("msg")))
        return "; ".join(parts) or str(detail)[:300]
    return str(detail)[:500]


@dataclass
class Session:
    email: str
    refresh_token: str
    access_token: str
    expires_at: float


class Api:
    """Calls to one management server as the logged-in user."""

    def __init__(self, url: str | None = None) -> None:
        self.url = server_url(url)
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=TIMEOUT)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- login ---------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"the management server at {self.url} does not answer ({type(exc).__name__}): is it running? "
                "(--url or FREQFLEET_URL name another)"
            ) from None

    def login(self, email: str, password: str) -> Session:
        response = self._send("POST", "/auth/token", data={"username": email, "password": password})
        if response.status_code != 200:
            raise ClientError(f"login refused ({response.status_code}): {_detail(response)}")
        session = self._keep(email, response.json())
        data = _load()
        data["current"] = self.url
        _save(data)
        return session

    def _keep(self, email: str, tokens: dict[str, Any]) -> Session:
        session = Session(
            email=email,
            refresh_token=str(tokens["refresh_token"]),
            access_token=str(tokens["access_token"]),
            expires_at=time.time() + float(tokens.get("expires_in", 900)),
        )
        data = _load()
        data["servers"][self.url] = session.__dict__
        _save(data)
        return session

    def session(self) -> Session:
        stored = _load()["servers"].get(self.url)
        if not isinstance(stored, dict):
            raise ClientError(f"not logged in to {self.url}: run `freqfleet login --url {self.url}`")
        try:
            return Session(**stored)
        except TypeError:
            raise ClientError(f"the stored login for {self.url} is damaged: run `freqfleet login` again") from None

    def _refresh(self, session: Session) -> Session:
        response = self._send("POST", "/auth/refresh", json={"refresh_token": session.refresh_token})
        if response.status_code != 200:
            raise ClientError(f"the login to {self.url} has ended ({_detail(response)}): run `freqfleet login` again")
        return self._keep(session.email, response.json())

    def logout(self) -> str:
        """End the login on the server (when it still can be) and forget it here, whatever the server says."""
        session = self.session()
        try:
            headers = {"Authorization": f"Bearer {self._token(session)}"}
            self._send("POST", "/auth/logout", json={"refresh_token": session.refresh_token}, headers=headers)
        except ClientError:
            pass  # ended or unreachable: nothing more to end there
        data = _load()
        data["servers"].pop(self.url, None)
        if data.get("current") == self.url:
            data.pop("current", None)
        _save(data)
        return session.email

    def _token(self, session: Session) -> str:
        if time.time() >= session.expires_at - RENEW_BEFORE:
            session = self._refresh(session)
        return session.access_token

    # -- requests ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (None for an empty one); a refused request raises :class:`ClientError`."""
        session = self.session()
        response = self._send(method, path, headers={"Authorization": f"Bearer {self._token(session)}"}, **kwargs)
        if response.status_code == 401:  # ended early (a logout elsewhere, a restart with other keys): once more
            session = self._refresh(self.session())
            response = self._send(method, path, headers={"Authorization": f"Bearer {session.access_token}"}, **kwargs)
        if response.status_code >= 400:
            raise ClientError(f"{method} {path} refused ({response.status_code}): {_detail(response)}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def stream_lines(self, path: str, **params: Any) -> Iterator[str]:
        """The lines of a Server-Sent Events answer, as they come."""
        session = self.session()
        headers = {"Authorization": f"Bearer {self._token(session)}"}
        try:
            with self.http.stream("GET", path, params=params, headers=headers, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(f"GET {path} refused ({response.status_code}): {_detail(response)}")
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise ClientError(f"the stream from {self.url} ended ({type(exc).__name__})") from None

    # -- names ---------------------------------------------------------------------------------

    def bot_id(self, given: str) -> str:
        """A bot's id from its id or its name (one of yours, or for an admin anyone's)."""
        return self._find("/bots", given, "bot", "freqfleet bots list", 1000)

    def strategy_id(self, given: str) -> str:
        return self._find("/strategies", given, "strategy", "freqfleet strategies list", 500)

    def model_id(self, given: str) -> str:
        return self._find("/models", given, "model", "freqfleet models list", 500)

    def _find(self, path: str, given: str, kind: str, listing: str, limit: int) -> str:
        rows = self.get(path, limit=limit)
        exact = [r for r in rows if str(r.get("id")) == given]
        if exact:
            return given
        named = [r for r in rows if r.get("name") == given]
        if len(named) == 1:
            return str(named[0]["id"])
        if len(named) > 1:
            raise ClientError(f"{len(named)} {kind}s are named {given!r}: give the id (`{listing}`)")
        starts = [r for r in rows if str(r.get("id", "")).startswith(given)] if len(given) >= 6 else []
        if len(starts) == 1:
            return str(starts[0]["id"])
        raise ClientError(f"no {kind} {given!r} (`{listing}` lists them)")
