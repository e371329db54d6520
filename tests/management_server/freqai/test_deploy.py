"""Deploying models to bots through the real management server and the real bus; the gateway is played by the
test (it reads the commands from the gateway's stream and publishes the model events a gateway would).

What travels is checked as a gateway checks it: the signature with the keys served at
``/.well-known/model-keys.json``, the Base64 or the chunks in Redis, the sha256 after decompression.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from management_server.gateways.models import Gateway
from management_server.users.models import Role
from shared.auth.verifier import keys_from_jwks
from shared.bus.messages import (
    CommandRejected,
    CommandRejectedData,
    Envelope,
    ModelBundle,
    ModelLoaded,
    ModelLoadedData,
    ModelRejected,
    ModelRejectedData,
)
from shared.bus.streams import EVENTS_STREAM
from shared.freqai.bundle import decompress_verified, verify_signature
from shared.freqai.transfer import decode_inline, read_chunks
from tests.enrollment import publisher_for
from tests.helpers import async_wait_for, free_port
from tests.management_server.bots.test_lifecycle import GATEWAY, heartbeat
from tests.management_server.conftest import Management
from tests.management_server.freqai.conftest import PAIRS, Trained, commands, sign_in, upload_bundle, upload_strategy

pytestmark = pytest.mark.slow  # the package's model is trained once, on first use


async def register(management: Management, headers: dict[str, str], trained: Trained, name: str = "m") -> Any:
    response = await upload_bundle(management, headers, trained.path.read_bytes(), name=name)
    assert response.status_code == 201, response.text
    return response.json()


async def freqai_bot(management: Management, headers: dict[str, str], model_id: str | None, **changes: Any) -> Any:
    strategy = await upload_strategy(management, headers, name=f"s-{uuid.uuid4().hex[:6]}")
    body = {
        "name": f"freqai-{uuid.uuid4().hex[:6]}",
        "strategy_id": strategy["id"],
        "pairs": PAIRS,
        "timeframe": "5m",
        "stake_amount": "10",
        "model_id": model_id,
    } | changes
    return await management.client.post("/api/v1/bots", json=body, headers=headers)


async def verified(management: Management, redis: aioredis.Redis, bundle: dict[str, Any]) -> ModelBundle:
    """Check a bundle as a gateway does: signature with the published keys, transfer, decompression, sha256."""
    model = ModelBundle.model_validate(bundle)
    jwks = (await management.client.get("/.well-known/model-keys.json")).json()
    keys = list(keys_from_jwks(jwks).values())
    assert keys
    verify_signature(
        keys, model.signature, model_id=model.model_id, version=model.version, sha256=model.sha256, size=model.size
    )
    compressed = io.BytesIO()
    if model.content_b64 is not None:
        decode_inline(model.content_b64, compressed, max_bytes=64 * 1024 * 1024)
    else:
        assert model.transfer_id is not None
        await read_chunks(redis, model.transfer_id, model.chunk_count, compressed, max_bytes=64 * 1024 * 1024)
    compressed.seek(0)
    decompress_verified(compressed, io.BytesIO(), sha256=model.sha256, size=model.size)
    return model


async def new_command(redis: aioredis.Redis, seen: int) -> dict[str, Any]:
    found = await async_wait_for(lambda: _more(redis, seen), timeout=10, what="a new command on the gateway's stream")
    return found


async def _more(redis: aioredis.Redis, seen: int) -> dict[str, Any] | None:
    listed = await commands(redis, GATEWAY)
    if len(listed) > seen:
        assert len(listed) == seen + 1, listed
        return listed[-1]
    return None


async def report(redis: aioredis.Redis, *events: Envelope) -> None:
    publisher = publisher_for(redis, GATEWAY)
    for event in events:
        await publisher.publish(EVENTS_STREAM, event)


def loaded(bot_id: str, model: dict[str, Any]) -> ModelLoaded:
    return ModelLoaded(
        source=f"gateway:{GATEWAY}",
        data=ModelLoadedData(
            bot_id=uuid.UUID(bot_id), model_id=uuid.UUID(model["id"]), sha256=model["sha256"], load_seconds=0.4
        ),
    )


async def bot_model(management: Management, headers: dict[str, str], bot_id: str) -> Any:
    response = await management.client.get(f"/api/v1/bots/{bot_id}/model", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def until_state(management: Management, headers: dict[str, str], bot_id: str, state: str, model_id: str) -> Any:
    async def settled() -> Any:
        body = await bot_model(management, headers, bot_id)
        return body if (body["model_state"], body["model_loaded_id"]) == (state, model_id) else None

    return await async_wait_for(settled, timeout=10, what=f"the bot's model {model_id} {state}")


async def test_start_deploy_and_rollback_send_the_right_commands(
    management: Management, redis_url: str, trained: Trained
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin = await sign_in(management, "root@example.com", Role.admin)
    alice = await sign_in(management, "alice@example.com")
    v1 = await register(management, admin, trained)
    v2 = await register(management, admin, trained)
    assert (v1["version"], v2["version"]) == (1, 2)

    # A bot is created with a model that fits it, or not at all.
    wrong = await freqai_bot(management, admin, v1["id"], timeframe="1m")
    assert wrong.status_code == 409
    assert wrong.json()["detail"] == (
        f"This model can't serve the bot: model 'm' version 1 ({v1['id']}) was trained on 5m candles; "
        "the bot trades 1m."
    )
    missing = await freqai_bot(management, admin, v1["id"], pairs=["BTC/USDT", "LTC/USDT"])
    assert "has no model for LTC/USDT" in missing.json()["detail"]
    assert (await freqai_bot(management, alice, v1["id"])).json()["detail"] == "No such model."  # not hers
    created = await freqai_bot(management, admin, v1["id"])
    assert created.status_code == 201, created.text
    bot = created.json()
    assert (bot["model_id"], bot["freqai"], bot["model_state"]) == (v1["id"], {}, None)
    bot_id = bot["id"]

    # START_BOT carries the model, signed; the gateway reports it loaded.
    await heartbeat(management)
    started = await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    start = await new_command(redis, 0)
    assert start["type"] == "START_BOT"
    assert start["data"]["spec"]["freqai"] == {}
    carried = await verified(management, redis, start["data"]["freqai_model"])
    assert (str(carried.model_id), carried.version, carried.sha256) == (v1["id"], 1, v1["sha256"])
    assert carried.content_b64 is not None  # small: inline
    assert (await bot_model(management, admin, bot_id))["model_state"] == "pending"
    await report(redis, loaded(bot_id, v1), loaded(bot_id, v1))  # twice: effects once
    body = await until_state(management, admin, bot_id, "loaded", v1["id"])
    assert [(d["action"], d["state"], d["model_id"]) for d in body["history"]] == [("start", "loaded", v1["id"])]

    # Deploy v2: UPDATE_MODEL with the next generation.
    deployed = await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    assert deployed.status_code == 202, deployed.text
    answer = deployed.json()
    assert answer["deployment"]["action"] == "deploy"
    assert answer["deployment"]["previous_model_id"] == v1["id"]
    assert answer["deployment"]["transfer"] == "inline"
    assert (answer["model_id"], answer["model_state"], answer["notice"]) == (v2["id"], "pending", None)
    update = await new_command(redis, 1)
    assert update["type"] == "UPDATE_MODEL"
    assert update["event_id"] == answer["deployment"]["command_id"]
    assert update["data"]["generation"] == 2
    sent = await verified(management, redis, update["data"]["model"])
    assert (str(sent.model_id), sent.version) == (v2["id"], 2)
    await report(redis, loaded(bot_id, v2))
    body = await until_state(management, admin, bot_id, "loaded", v2["id"])
    assert body["history"][0]["state"] == "loaded"
    assert body["history"][0]["load_seconds"] == 0.4
    again = await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    assert again.status_code == 409
    assert again.json()["detail"] == f"The bot already predicts with model 'm' version 2 ({v2['id']})."

    # Rollback: v1 ran on this bot, so its gateway has it: ROLLBACK_MODEL, no transfer.
    rolled = await management.client.post(f"/api/v1/bots/{bot_id}/model/rollback", headers=admin)
    assert rolled.status_code == 202, rolled.text
    assert (rolled.json()["deployment"]["action"], rolled.json()["deployment"]["transfer"]) == ("rollback", "cached")
    back = await new_command(redis, 2)
    assert back["type"] == "ROLLBACK_MODEL"
    assert (back["data"]["model_id"], back["data"]["generation"]) == (v1["id"], 3)
    await report(redis, loaded(bot_id, v1))
    body = await until_state(management, admin, bot_id, "loaded", v1["id"])
    assert (body["model_id"], body["history"][0]["state"]) == (v1["id"], "loaded")
    nothing = await management.client.post(f"/api/v1/bots/{bot_id}/model/rollback", headers=admin)
    assert nothing.status_code == 409
    assert nothing.json()["detail"].startswith("The bot has no earlier model to go back to")
    assert len(await commands(redis, GATEWAY)) == 3

    # Deploy v2 again, then roll back again: the history walks back and forth as deployed.
    await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    await report(redis, loaded(bot_id, v2))
    await until_state(management, admin, bot_id, "loaded", v2["id"])
    await management.client.post(f"/api/v1/bots/{bot_id}/model/rollback", headers=admin)
    assert (await new_command(redis, 4))["data"]["model_id"] == v1["id"]
    body = await bot_model(management, admin, bot_id)
    assert [(d["action"], d["model_id"]) for d in body["history"]] == [
        ("rollback", v1["id"]),
        ("deploy", v2["id"]),
        ("rollback", v1["id"]),
        ("deploy", v2["id"]),
        ("start", v1["id"]),
    ]
    assert (await management.client.get(f"/api/v1/bots/{bot_id}/model", headers=alice)).status_code == 404
    audit = [(e.action, e.outcome) for e in await management.audit() if e.action.startswith("bot.model.")]
    assert audit == [
        ("bot.model.deploy", "success"),
        ("bot.model.deploy", "failure"),
        ("bot.model.rollback", "success"),
        ("bot.model.rollback", "failure"),
        ("bot.model.deploy", "success"),
        ("bot.model.rollback", "success"),
    ]
    await redis.aclose()


async def test_a_large_bundle_travels_in_chunks_and_a_refusal_keeps_the_running_model(
    management: Management, redis_url: str, trained: Trained
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin = await sign_in(management, "root@example.com", Role.admin)
    v1 = await register(management, admin, trained)
    v2 = await register(management, admin, trained)
    bot_id = (await freqai_bot(management, admin, v1["id"])).json()["id"]
    await heartbeat(management)
    await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    await new_command(redis, 0)
    await report(redis, loaded(bot_id, v1))
    await until_state(management, admin, bot_id, "loaded", v1["id"])

    registry = management.app.state.model_registry
    registry.inline_max = 1024  # the bundle (tens of KB compressed) now goes in chunks
    deployed = await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    assert deployed.json()["deployment"]["transfer"] == "chunked"
    update = await new_command(redis, 1)
    sent = await verified(management, redis, update["data"]["model"])
    assert sent.content_b64 is None
    assert sent.chunk_count == -(-v2["compressed_size"] // (1024 * 1024))
    assert 0 < await redis.ttl(f"freqfleet:model-transfer:{sent.transfer_id}") <= 24 * 3600

    # The gateway refuses it: the bot keeps v1, and its next start carries v1.
    refused = ModelRejected(
        source=f"gateway:{GATEWAY}",
        data=ModelRejectedData(bot_id=uuid.UUID(bot_id), model_id=uuid.UUID(v2["id"]), reason="hash mismatch"),
    )
    await report(redis, refused, refused)
    body = await until_state(management, admin, bot_id, "rejected", v1["id"])
    assert body["model_id"] == v1["id"]
    assert (body["history"][0]["state"], body["history"][0]["reason"]) == ("rejected", "hash mismatch")
    shown = (await management.client.get(f"/api/v1/bots/{bot_id}", headers=admin)).json()
    assert shown["last_error"] == "model 'm' version 2 refused: hash mismatch"
    assert (shown["model_id"], shown["model_state"], shown["model_loaded_id"]) == (v1["id"], "rejected", v1["id"])

    # A command the gateway refuses outright (COMMAND_REJECTED) settles its deployment the same way.
    registry.inline_max = 512 * 1024
    again = await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    command = await new_command(redis, 2)
    assert command["event_id"] == again.json()["deployment"]["command_id"]
    await report(
        redis,
        CommandRejected(
            source=f"gateway:{GATEWAY}",
            data=CommandRejectedData(
                command_id=uuid.UUID(command["event_id"]),
                command_type="UPDATE_MODEL",
                bot_id=uuid.UUID(bot_id),
                reason="no model-signing key is known",
            ),
        ),
    )
    body = await until_state(management, admin, bot_id, "rejected", v1["id"])
    assert body["history"][0]["reason"] == "no model-signing key is known"
    assert body["model_id"] == v1["id"]
    await redis.aclose()


async def test_a_stopped_bot_gets_its_model_with_its_next_start(
    management: Management, redis_url: str, trained: Trained
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    admin = await sign_in(management, "root@example.com", Role.admin)
    v1 = await register(management, admin, trained)
    bot_id = (await freqai_bot(management, admin, None, freqai={"fit_live_predictions_candles": 100})).json()["id"]
    no_model = await management.client.post(f"/api/v1/bots/{bot_id}/model/rollback", headers=admin)
    assert no_model.status_code == 409
    deployed = await management.client.post(f"/api/v1/bots/{bot_id}/model", json={"model_id": v1["id"]}, headers=admin)
    assert deployed.status_code == 202, deployed.text
    assert (deployed.json()["deployment"]["command_id"], deployed.json()["model_state"]) == (None, "pending")
    assert await commands(redis, GATEWAY) == []

    # Predictions come from a running bot.
    stopped = await management.client.get(f"/api/v1/bots/{bot_id}/predictions", headers=admin)
    assert stopped.status_code == 409
    assert stopped.json()["detail"].startswith("The bot is not running")

    await heartbeat(management)
    await management.client.post(f"/api/v1/bots/{bot_id}/start", headers=admin)
    start = await new_command(redis, 0)
    assert start["data"]["spec"]["freqai"] == {"fit_live_predictions_candles": 100}
    assert (await verified(management, redis, start["data"]["freqai_model"])).model_id == uuid.UUID(v1["id"])
    await report(redis, loaded(bot_id, v1))
    body = await until_state(management, admin, bot_id, "loaded", v1["id"])
    assert [(d["action"], d["state"]) for d in body["history"]] == [("deploy", "loaded")]  # the pending one settled

    # The gateway has not said where its API is: the predictions can't be asked for yet.
    unknown = await management.client.get(f"/api/v1/bots/{bot_id}/predictions?pair=BTC/USDT", headers=admin)
    assert unknown.status_code == 503
    assert unknown.json()["detail"] == f"Gateway {GATEWAY} has not said where its API is yet: try again shortly."
    bad_pair = await management.client.get(f"/api/v1/bots/{bot_id}/predictions?pair=btc", headers=admin)
    assert bad_pair.status_code == 422
    async with management.app.state.sessionmaker.begin() as session:
        await session.execute(
            update(Gateway).where(Gateway.gateway_id == GATEWAY).values(api_url=f"http://127.0.0.1:{free_port()}")
        )
    down = await management.client.get(f"/api/v1/bots/{bot_id}/predictions", headers=admin)
    assert down.status_code == 503
    assert down.json()["detail"] == f"Gateway {GATEWAY} did not answer (ConnectError): try again."
    await redis.aclose()
