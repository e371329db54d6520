"""The `freqfleet` commands an operator runs by hand, as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from shared.bus.consumer import ConsumerConfig, Delivery, StreamConsumer
from shared.bus.messages import StopBot, StopBotData
from shared.bus.publisher import Publisher
from tests.helpers import free_port, until


def freqfleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("FREQFLEET_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "freqfleet", *args], env=base | env, capture_output=True, text=True, timeout=60
    )


def test_rotate_keys_adds_a_key_and_keeps_the_old_one(tmp_path: Path) -> None:
    env = {"FREQFLEET_DATA_DIR": str(tmp_path)}
    first = freqfleet("rotate-keys", env=env)
    second = freqfleet("rotate-keys", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "2 keys published" in second.stdout
    keys = sorted((tmp_path / "keys").glob("*.pem"))
    assert len(keys) == 2
    assert all(oct(k.stat().st_mode & 0o777) == "0o600" for k in keys)
    refused = freqfleet("rotate-keys", env=env | {"FREQFLEET_JWT_PRIVATE_KEYS": keys[0].read_text()})
    assert refused.returncode == 2
    assert "FREQFLEET_JWT_PRIVATE_KEYS" in refused.stderr


async def test_migrate_creates_the_first_admin_when_asked(database_url: str) -> None:
    env = {"FREQFLEET_DATABASE_URL": database_url, "FREQFLEET_ADMIN_EMAIL": "ops@example.com"}
    first = freqfleet("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "first admin ops@example.com, password " in first.stdout
    again = freqfleet("migrate", env=env)
    assert again.returncode == 0
    assert "password" not in again.stdout


async def test_dead_letters_are_listed_and_replayed(redis_url: str) -> None:
    stream = f"freqfleet:test:{uuid.uuid4().hex[:6]}"
    redis = aioredis.Redis.from_url(redis_url)
    message = StopBot(source="management", data=StopBotData(bot_id=uuid.uuid4(), generation=1))
    fail = True
    handled: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        if fail:
            raise ValueError("bot folder missing")
        handled.append(delivery.message.event_id)

    config = ConsumerConfig(stream, "g", "c", max_deliveries=1, claim_idle_ms=100, reclaim_interval_s=0.05)
    consumer = StreamConsumer(redis_url, config, handler)
    consumer.start()
    try:
        await Publisher(redis).publish(stream, message)
        await until(lambda: consumer.stats.dead_lettered == 1, timeout=10, what="a dead letter")
        env = {"FREQFLEET_REDIS_URL": redis_url}
        streams = freqfleet("bus", "dead-letters", env=env)
        assert f"{stream}:dead\t1 dead letters" in streams.stdout
        listed = freqfleet("bus", "dead-letters", f"{stream}:dead", env=env)
        assert "STOP_BOT" in listed.stdout
        assert "ValueError: bot folder missing" in listed.stdout
        entry_id = listed.stdout.split("\t", 1)[0]
        fail = False
        replayed = freqfleet("bus", "replay", f"{stream}:dead", entry_id, env=env)
        assert replayed.returncode == 0, replayed.stderr
        await until(lambda: handled == [message.event_id], timeout=10, what="the replayed message")
        missing = freqfleet("bus", "replay", f"{stream}:dead", entry_id, env=env)
        assert missing.returncode == 1
        assert "no dead letter" in missing.stderr
    finally:
        await consumer.stop()
        await redis.aclose()


def test_operations_commands_say_in_one_line_what_is_missing(tmp_path: Path) -> None:
    nothing = freqfleet("bus", "dead-letters", env={"FREQFLEET_DATA_DIR": str(tmp_path)})
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (
        f"bus dead-letters: no embedded Valkey in {tmp_path.resolve()} (FREQFLEET_DATA_DIR): run `freqfleet up` "
        "there, or set REDIS_URL"
    )
    closed = freqfleet("bus", "dead-letters", env={"FREQFLEET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert closed.returncode == 1
    assert closed.stderr.startswith("bus dead-letters: Redis is not reachable (ConnectionError")
    assert len(closed.stderr.strip().splitlines()) == 1  # no traceback


def test_a_gateway_is_enrolled_listed_and_revoked_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    gateway_env = {"FREQFLEET_DATA_DIR": str(tmp_path), "FREQFLEET_GATEWAY_ID": "gw-cli"}
    identity = freqfleet("gateways", "identity", env=gateway_env)
    assert identity.returncode == 0, identity.stderr
    line = identity.stdout.strip()
    assert line.startswith("ffgw1:gw-cli:")
    assert freqfleet("gateways", "identity", env=gateway_env).stdout.strip() == line  # made once, kept
    assert (tmp_path / "gateway" / "gw-cli" / "identity.json").stat().st_mode & 0o777 == 0o600
    db = {"FREQFLEET_DATABASE_URL": database_url}
    enrolled = freqfleet("gateways", "enroll", line, env=db)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "gateway gw-cli enrolled" in enrolled.stdout
    assert "enrolled already" in freqfleet("gateways", "enroll", line, env=db).stdout
    bad = freqfleet("gateways", "enroll", "ssh-ed25519 AAAA", env=db)
    assert bad.returncode == 2
    assert "not an enrollment line" in bad.stderr
    listed = freqfleet("gateways", "list", env=db).stdout
    assert "gw-cli\tenrolled\tnever seen" in listed
    revoked = freqfleet("gateways", "revoke", "gw-cli", env=db)
    assert revoked.returncode == 0, revoked.stderr
    assert "gateway gw-cli revoked; 0 bots orphaned" in revoked.stdout
    assert "gw-cli\trevoked" in freqfleet("gateways", "list", env=db).stdout
    assert freqfleet("gateways", "revoke", "gw-nope", env=db).returncode == 1
