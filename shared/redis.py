"""Redis clients as every Freqfleet process builds them, from one URL: a server's, or a Sentinel set's.

``REDIS_URL`` may name a server (``redis://``, ``rediss://``) or a service watched by Redis Sentinel:
``redis+sentinel://[user:password@]host:port,host:port,.../service_name[/db][?sentinel_password=...]`` (``rediss+``
for TLS to the data nodes). With Sentinel, every new connection asks the sentinels which node is the primary now, so
after a failover the clients' retries (below) land on the promoted replica by themselves; a connection to a primary
demoted to a replica (``READONLY``) is dropped and made again the same way (redis-py's ``SentinelManagedConnection``).
The user and password are the data nodes'; ``sentinel_username``/``sentinel_password`` in the query, the sentinels'
(none by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS to the data nodes
SENTINEL_RETRIES = 10  # a promotion takes the sentinels' down-after time and an election: retry for longer


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def _host_port(item: str, url_for_errors: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{url_for_errors}: {item!r} is not host:port (each sentinel needs its port)")
    return host.strip("[]"), int(port)


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The Sentinel set a ``redis+sentinel://`` URL names; None for any other URL.

    :raises ValueError: a Sentinel URL without sentinels or service name (the message shows the URL without its
        password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        return None
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not at:
        credentials, hosts = "", netloc
    shown = f"{scheme}://{'***@' if credentials else ''}{hosts}/{path}"
    username, _, password = credentials.partition(":")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise ValueError(f"{shown}: a Sentinel URL is {scheme}://[user:password@]host:port,host:port/service_name[/db]")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{shown}: after the service name comes the database number only")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    return SentinelUrl(
        sentinels=[_host_port(item, shown) for item in hosts.split(",")],
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=SENTINEL_SCHEMES[scheme],
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def create_redis(url: str, *, socket_timeout: float | None = 5.0, retries: int = 3) -> aioredis.Redis:
    """A client that reconnects by itself: a command that meets a dropped connection (a
    Redis restart, a failover) is retried on a new one a few times, with jittered backoff,
    before the error reaches the caller. Retried XADDs may append twice; consumers
    recognise the duplicate by its ``event_id``. A Sentinel URL gives a client of the service's primary,
    whichever node that is (``retries`` at least ``SENTINEL_RETRIES``)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 3,
        "socket_timeout": socket_timeout,
        "health_check_interval": 30,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)
        return aioredis.Redis.from_url(url, retry=retry, **options)
    retry = Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), max(retries, SENTINEL_RETRIES))
    watchers = Sentinel(  # type: ignore[no-untyped-call]
        sentinel.sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
            "username": sentinel.sentinel_username,
            "password": sentinel.sentinel_password,
        },
    )
    client: aioredis.Redis = watchers.master_for(
        sentinel.service,
        db=sentinel.db,
        username=sentinel.username,
        password=sentinel.password,
        ssl=sentinel.tls,
        retry=retry,
        **options,
    )
    return client


def celery_urls(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker (and result backend) URL for ``url``, with the transport options it needs: kombu's own
    Sentinel transport (``sentinel://host:port;sentinel://host:port/db`` and ``master_name``) for a Sentinel URL."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return url, {}
    auth = ""
    if sentinel.password is not None:
        auth = f"{sentinel.username or ''}:{sentinel.password}@"
    hosts = ";".join(f"sentinel://{auth}{host}:{port}/{sentinel.db}" for host, port in sentinel.sentinels)
    kwargs = {"username": sentinel.sentinel_username, "password": sentinel.sentinel_password}
    options = {"master_name": sentinel.service, "sentinel_kwargs": {k: v for k, v in kwargs.items() if v}}
    return hosts, options
