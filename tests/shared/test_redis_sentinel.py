"""``REDIS_URL`` as a Sentinel URL: read, or refused with the reason and the password never in it; Celery gets
kombu's Sentinel transport. A failover under load, with real Valkey processes, a management server and a gateway:
``tests/trading_gateway/bus/test_failover_burst.py``."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from management_server.config import ManagementSettings
from management_server.worker import create_celery
from shared.redis import celery_urls, parse_sentinel_url


def test_sentinel_urls_are_read_or_refused_with_the_reason() -> None:
    read = parse_sentinel_url("redis+sentinel://u:p%40ss@10.0.0.1:26379,[::1]:26380/my-service/2?sentinel_password=s")
    assert read is not None
    assert read.sentinels == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (read.service, read.db, read.username, read.password) == ("my-service", 2, "u", "p@ss")
    assert (read.tls, read.sentinel_password) == (False, "s")
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    for bad, why in (
        ("redis+sentinel://:secret@10.0.0.1:26379", "a Sentinel URL is"),
        ("redis+sentinel://:secret@10.0.0.1/svc", "is not host:port"),
        ("redis+sentinel://:secret@10.0.0.1:26379/svc/x", "the database number only"),
    ):
        with pytest.raises(ValueError, match=why) as refused:
            parse_sentinel_url(bad)
        assert "secret" not in str(refused.value)


def test_celery_uses_kombus_sentinel_transport(management_settings: ManagementSettings) -> None:
    url = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/freqfleet/1"
    broker, options = celery_urls(url)
    assert broker == "sentinel://:pw@10.0.0.1:26379/1;sentinel://:pw@10.0.0.2:26379/1"
    assert options == {"master_name": "freqfleet", "sentinel_kwargs": {}}
    app = create_celery(management_settings.model_copy(update={"redis_url": SecretStr(url)}), results=False)
    assert app.conf.broker_transport_options["master_name"] == "freqfleet"
    assert app.conf.broker_url.startswith("sentinel://")
