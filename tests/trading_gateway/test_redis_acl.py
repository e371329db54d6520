"""A gateway's Valkey user: its own keys, the events stream to append to, and nothing of anyone else's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from freqfleet.embedded import EmbeddedValkey
from trading_gateway.redis_acl import acl_rules, acl_user


def test_a_gateways_user_reaches_its_own_keys_only(valkey: EmbeddedValkey) -> None:
    url = valkey.user_url(acl_user("gw-acl"), acl_rules("gw-acl"))
    assert "gateway-gw-acl" in url
    admin: Any = redis.Redis.from_url(valkey.url)
    gateway: Any = redis.Redis.from_url(url)
    try:
        admin.set("freqfleet:auth:ver:access:someone", 3)
        admin.xadd("freqfleet:commands:gw-other", {"envelope": "{}"})
        # What it needs: its stream and group, dead letters, dedupe marks, generations (a script), events (append),
        # revocations and model chunks (read).
        gateway.xgroup_create("freqfleet:commands:gw-acl", "gateway:gw-acl", id="$", mkstream=True)
        gateway.xreadgroup("gateway:gw-acl", "gw-acl", {"freqfleet:commands:gw-acl": ">"}, count=1)
        gateway.xinfo_groups("freqfleet:commands:gw-acl")
        gateway.xadd("freqfleet:commands:gw-acl:dead", {"reason": "x"})
        gateway.hset("freqfleet:bus-errors:freqfleet:commands:gw-acl:gateway:gw-acl", "1-0", "e")
        gateway.set("freqfleet:processed:gateway:gw-acl:some-id", 1, ex=60)
        script = gateway.register_script("return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])")
        script(keys=["freqfleet:generations:gw-acl"], args=["bot", 2])
        gateway.xadd("freqfleet:events", {"envelope": "{}"}, maxlen=1000, approximate=True)
        assert gateway.get("freqfleet:auth:ver:access:someone") == b"3"
        gateway.hget("freqfleet:model-transfer:abc", "0")
        admin.xadd("freqfleet:receipts:gw-acl", {"event_ids": "", "through": "1-0"})
        assert gateway.xread({"freqfleet:receipts:gw-acl": "0-0"}, count=10)  # its receipts
        admin.xadd("freqfleet:receipts:gw-other", {"event_ids": "", "through": "1-0"})
        # What it must not do.
        refused: list[Callable[[], object]] = [
            lambda: gateway.xadd("freqfleet:commands:gw-other", {"envelope": "{}"}),  # another gateway's commands
            lambda: gateway.xrange("freqfleet:commands:gw-other"),
            lambda: gateway.xrange("freqfleet:events"),  # others' reports
            lambda: gateway.xread({"freqfleet:receipts:gw-other": "0-0"}),  # another gateway's receipts
            lambda: gateway.xadd("freqfleet:receipts:gw-acl", {"event_ids": "forged"}),  # confirming its own
            lambda: gateway.delete("freqfleet:auth:ver:access:someone"),  # a revocation
            lambda: gateway.set("freqfleet:auth:ver:access:someone", 0),
            lambda: gateway.delete("celery"),
            lambda: gateway.flushall(),
            lambda: gateway.keys("*"),
            lambda: gateway.config_get("requirepass"),
            lambda: gateway.execute_command("ACL", "LIST"),
        ]
        for call in refused:
            with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission"):
                call()
    finally:
        admin.close()
        gateway.close()
