"""FreqAI models through a real gateway into real bots: start with a model, swap, refuse, roll back, predict.

Three bots of the example FreqAI strategy run at once: Y (the subject) and two references, Z on model A
and X on model B. Predictions are deterministic for a candle and a model, so "Y predicts with B" is shown
by Y's prediction equalling X's on the same candle (and differing from Z's), from the bots themselves
through the gateway's predictions route.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.bus.messages import (
    BotStopped,
    CommandRejected,
    ModelBundle,
    ModelLoaded,
    ModelRejected,
    RollbackModel,
    RollbackModelData,
    StartBot,
    StartBotData,
    UpdateModel,
    UpdateModelData,
)
from shared.freqai.live import ACK_FILE, MARKER_FILE, models_folder
from shared.freqai.transfer import model_bundle
from tests.exchange_simulator.conftest import SimulatorProcess
from tests.freqai_models import FREQAI, PAIRS, TrainedModel, TrainedModels, flip_byte, freqai_spec, tar_of, zstd
from tests.helpers import async_wait_for
from tests.trading_gateway.conftest import Bus, Gateway, bearer, running_gateway, settings_for
from tests.trading_gateway.freqai.conftest import Authority
from trading_gateway.bots.files import BotFiles
from trading_gateway.config import GatewaySettings
from trading_gateway.freqai.installs import MODELS_FILE

MAX_BUNDLE = 64 * 1024 * 1024


def start_with(bot_id: uuid.UUID, generation: int, model: ModelBundle, **spec: Any) -> StartBot:
    data = StartBotData(bot_id=bot_id, generation=generation, spec=freqai_spec(**spec), freqai_model=model)
    return StartBot(source="management", correlation_id=f"test-{uuid.uuid4().hex[:8]}", data=data)


def update_model(bot_id: uuid.UUID, generation: int, model: ModelBundle) -> UpdateModel:
    return UpdateModel(source="management", data=UpdateModelData(bot_id=bot_id, generation=generation, model=model))


def rollback(bot_id: uuid.UUID, generation: int, model_id: uuid.UUID | None = None) -> RollbackModel:
    data = RollbackModelData(bot_id=bot_id, generation=generation, model_id=model_id)
    return RollbackModel(source="management", data=data)


def signed(authority: Authority, trained: TrainedModel, model_id: uuid.UUID, version: int) -> ModelBundle:
    return authority.inline(
        trained.compressed, model_id=model_id, version=version, sha256=trained.sha256, size=trained.size
    )


async def predictions(gw: Gateway, token: str, bot_id: uuid.UUID) -> dict[str, Any]:
    response = await gw.http.get(f"/api/v1/bots/{bot_id}/predictions", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_pair(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["pair"]: p for p in body["predictions"]}


async def on_same_candle(
    gw: Gateway, token: str, one: uuid.UUID, other: uuid.UUID, one_model: uuid.UUID, other_model: uuid.UUID
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Both bots' predictions for the same candles, made by the models named (a new candle may come meanwhile)."""

    async def both() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None:
        first = by_pair(await predictions(gw, token, one))
        second = by_pair(await predictions(gw, token, other))
        ready = all(
            first[p]["candle_time"] is not None
            and first[p]["candle_time"] == second[p]["candle_time"]
            and first[p]["model_id"] == str(one_model)
            and second[p]["model_id"] == str(other_model)
            for p in PAIRS
        )
        return (first, second) if ready else None

    return await async_wait_for(both, timeout=90, interval=0.5, what=f"predictions of {one} and {other} on one candle")


def assert_same_predictions(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> None:
    for pair in PAIRS:
        assert first[pair]["predictions"]["&-s_close"] == pytest.approx(
            second[pair]["predictions"]["&-s_close"], rel=1e-9
        )


def assert_other_predictions(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> None:
    for pair in PAIRS:
        assert first[pair]["predictions"]["&-s_close"] != pytest.approx(
            second[pair]["predictions"]["&-s_close"], rel=1e-6
        )


def pid_of(gw: Gateway, bot_id: uuid.UUID) -> int:
    bot = gw.app.state.fleet.bot(bot_id)
    assert bot is not None
    assert bot.process is not None
    return int(bot.process.pid)


def broken_copy(trained: TrainedModel, folder: Path) -> TrainedModel:
    """Model A repacked with BTC's model.joblib replaced by bytes that are not a pickle: valid, signed, unusable."""
    copy = folder / "broken-model"
    shutil.copytree(trained.result.model_dir, copy)
    joblib = next(copy.glob("sub-train-BTC_*/*_model.joblib"))
    joblib.write_bytes(b"this is not a pickle of a model " * 100)
    result = dataclasses.replace(trained.result, model_dir=copy)
    return TrainedModel(result=result, packed=result.pack(folder / "broken.tar.zst"), progress=[])


async def expect_refused(bus: Bus, command: UpdateModel, bot_id: uuid.UUID, reason: str) -> str:
    answer = await bus.answer(command)
    assert isinstance(answer, CommandRejected), answer
    model_id = command.data.model.model_id
    rejected = await bus.wait(ModelRejected, lambda e: e.data.model_id == model_id, bot_id=bot_id, timeout=30)
    assert reason in rejected.data.reason, rejected.data.reason
    return rejected.data.reason


@pytest.mark.slow
async def test_models_start_swap_refuse_and_roll_back_in_running_bots(
    authority: Authority,
    models: TrainedModels,
    simulator: SimulatorProcess,
    bus_factory: Any,
    cleanup: list[GatewaySettings],
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, authority.tokens, model_max_bundle_bytes=MAX_BUNDLE)
    cleanup.append(settings)
    bus: Bus = bus_factory(settings.gateway_id)
    token = authority.tokens.mint("service")
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    x, y, z = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bot_folder = settings.gateway_data_dir / "bots" / str(y)
    store = settings.gateway_data_dir / "models" / "store"
    async with running_gateway(settings) as gw, aioredis.Redis.from_url(redis_url) as redis:
        # 1. Three FreqAI bots start with their models (inline) and predict without training first.
        for bot_id, model in (
            (y, signed(authority, models.a, a_id, 1)),
            (z, signed(authority, models.a, a_id, 1)),
            (x, signed(authority, models.b, b_id, 1)),
        ):
            answer = await bus.answer(await bus.send(start_with(bot_id, 1, model)))
            assert answer.type == "COMMAND_ACCEPTED", answer
        for bot_id, model_id in ((y, a_id), (z, a_id), (x, b_id)):
            loaded = await bus.wait(ModelLoaded, lambda e, m=model_id: e.data.model_id == m, bot_id=bot_id, timeout=180)
            assert loaded.data.sha256 == (models.a.sha256 if model_id == a_id else models.b.sha256)
        pid = pid_of(gw, y)
        log = (bot_folder / "bot.log").read_text()
        assert "receives its models from the gateway and never trains" in log
        assert "Starting training" not in log
        assert sorted(p.name for p in store.iterdir()) == sorted([models.a.sha256, models.b.sha256])  # shared copies
        first = by_pair(await predictions(gw, token, y))
        for pair in PAIRS:
            assert first[pair]["model_id"] == str(a_id)
            assert first[pair]["model_version"] == 1
            assert isinstance(first[pair]["predictions"]["&-s_close"], float)
            assert "DI_values" in first[pair]
        y_on_a, z_on_a = await on_same_candle(gw, token, y, z, a_id, a_id)
        assert_same_predictions(y_on_a, z_on_a)

        # 2. UPDATE_MODEL with B, in chunks through Redis: the same process predicts as X does (model B).
        chunked = await model_bundle(
            redis,
            models.b.packed.path,
            model_id=b_id,
            version=2,
            sha256=models.b.sha256,
            size=models.b.size,
            signature=authority.sign(b_id, 2, models.b.sha256, models.b.size),
            inline_max=0,
            chunk_size=64 * 1024,
        )
        assert chunked.chunk_count > 1
        answer = await bus.answer(await bus.send(update_model(y, 2, chunked)))
        assert answer.type == "COMMAND_ACCEPTED", answer
        swapped = await bus.wait(ModelLoaded, lambda e: e.data.model_id == b_id, bot_id=y, timeout=60)
        assert swapped.data.sha256 == models.b.sha256
        assert pid_of(gw, y) == pid
        y_on_b, x_on_b = await on_same_candle(gw, token, y, x, b_id, b_id)
        assert_same_predictions(y_on_b, x_on_b)
        for pair in PAIRS:
            assert y_on_b[pair]["model_version"] == 2
        y_now, z_now = await on_same_candle(gw, token, y, z, b_id, a_id)
        assert_other_predictions(y_now, z_now)

        # 3. Bundles refused before anything reaches the bot, each with its reason.
        tar_b = models.b.tar()
        other_key = authority.inline(
            models.b.compressed, model_id=uuid.uuid4(), version=3, sha256=models.b.sha256, size=models.b.size
        )
        other_key = other_key.model_copy(update={"signature": signed(authority, models.b, b_id, 2).signature})
        escape = tar_of({"../escape.txt": b"outside", "manifest.json": b"{}"})
        escape_facts = {"sha256": hashlib.sha256(escape).hexdigest(), "size": len(escape)}
        cases: list[tuple[ModelBundle, str]] = [
            (
                authority.inline(
                    zstd(flip_byte(tar_b, len(tar_b) // 2)),
                    model_id=uuid.uuid4(),
                    version=3,
                    sha256=models.b.sha256,
                    size=models.b.size,
                ),
                "sha256",
            ),
            (other_key, "does not verify"),
            (
                authority.inline(
                    b"",
                    model_id=uuid.uuid4(),
                    version=3,
                    sha256=models.b.sha256,
                    size=models.b.size,
                    content_b64="@@" + "A" * 102,
                ),
                "not valid Base64",
            ),
            (
                authority.inline(
                    zstd(bytes(256 * 1024 * 1024)), model_id=uuid.uuid4(), version=3, sha256="0" * 64, size=1024 * 1024
                ),
                "decompression bomb",
            ),
            (
                authority.inline(
                    models.b.compressed, model_id=uuid.uuid4(), version=3, sha256=models.b.sha256, size=MAX_BUNDLE + 1
                ),
                "takes at most",
            ),
            (
                authority.inline(zstd(escape), model_id=uuid.uuid4(), version=3, **escape_facts),
                "outside the model folder",
            ),
        ]
        for bundle, reason in cases:
            await expect_refused(bus, await bus.send(update_model(y, 3, bundle)), y, reason)
        assert not list(settings.data_dir.rglob("escape.txt"))
        assert sorted(p.name for p in store.iterdir()) == sorted([models.a.sha256, models.b.sha256])
        still, x_still = await on_same_candle(gw, token, y, x, b_id, b_id)
        assert_same_predictions(still, x_still)

        # 4. A signed bundle the bot can't load: accepted, then refused by the bot; it keeps predicting with B.
        broken = broken_copy(models.a, tmp_path)
        c_id = uuid.uuid4()
        answer = await bus.answer(await bus.send(update_model(y, 4, signed(authority, broken, c_id, 3))))
        assert answer.type == "COMMAND_ACCEPTED", answer
        refused = await bus.wait(ModelRejected, lambda e: e.data.model_id == c_id, bot_id=y, timeout=60)
        assert "could not use" in refused.data.reason
        assert f"keeps predicting with model {b_id} version 2" in refused.data.reason
        await loaded_times(bus, settings, y, b_id, 2, "model B acknowledged again after the refusal")
        still, x_still = await on_same_candle(gw, token, y, x, b_id, b_id)
        assert_same_predictions(still, x_still)

        # 5. ROLLBACK_MODEL: back to A, from the gateway's store, in the same process: Z's predictions again.
        answer = await bus.answer(await bus.send(rollback(y, 5)))
        assert answer.type == "COMMAND_ACCEPTED", answer
        await loaded_times(bus, settings, y, a_id, 2, "model A loaded again")
        y_back, z_ref = await on_same_candle(gw, token, y, z, a_id, a_id)
        assert_same_predictions(y_back, z_ref)
        assert pid_of(gw, y) == pid

        history = (await gw.http.get(f"/api/v1/bots/{y}/models", headers=bearer(token))).json()["history"]
        assert [(h["reason"], h["status"], h["model_id"]) for h in history] == [
            ("rollback", "loaded", str(a_id)),
            ("restore", "loaded", str(b_id)),
            ("update", "failed", str(c_id)),
            ("update", "loaded", str(b_id)),
            ("start", "loaded", str(a_id)),
        ]
        assert all(h["load_seconds"] is not None for h in history if h["status"] == "loaded")
        # No bot was restarted meanwhile: no crash, no stall, no new process.
        assert not [e for e in await bus.of(BotStopped) if e.data.bot_id in (x, y, z)]

        # 6. A model that changes the FreqAI section (B's files, another DI_threshold) goes in with reload_config.
        # The new FreqAI instance reads the predictions A made from disk; still, from MODEL_LOADED on, Y's newest
        # candle is B's prediction, as X (on B: the same files) makes it for that candle, not A's stored one.
        di_freqai = {**FREQAI, "feature_parameters": {**FREQAI["feature_parameters"], "DI_threshold": 0.8}}
        b_di = dataclasses.replace(models.b.result, freqai=di_freqai).pack(tmp_path / "b-di.tar.zst")
        b_di_model = TrainedModel(result=models.b.result, packed=b_di, progress=[])
        d_id = uuid.uuid4()
        answer = await bus.answer(await bus.send(update_model(y, 6, signed(authority, b_di_model, d_id, 1))))
        assert answer.type == "COMMAND_ACCEPTED", answer
        await bus.wait(ModelLoaded, lambda e: e.data.model_id == d_id, bot_id=y, timeout=120)
        assert pid_of(gw, y) == pid
        assert (bot_folder / "bot.log").read_text().count("never trains") == 2  # a second FreqAI instance
        y_on_d, x_on_b = await on_same_candle(gw, token, y, x, d_id, b_id)
        assert_same_predictions(y_on_d, x_on_b)
        for pair in PAIRS:
            assert y_on_d[pair]["DI_values"] == pytest.approx(x_on_b[pair]["DI_values"], rel=1e-9)


async def _count(bus: Bus, bot_id: uuid.UUID, model_id: uuid.UUID, times: int) -> bool:
    return len([e for e in await bus.of(ModelLoaded, bot_id) if e.data.model_id == model_id]) >= times


async def loaded_times(
    bus: Bus, settings: GatewaySettings, bot_id: uuid.UUID, model_id: uuid.UUID, times: int, what: str
) -> None:
    """Wait for the ``times``-th MODEL_LOADED of ``model_id``; on a timeout, say what the gateway and the bot
    recorded (the install, the bot's acknowledgement, its log's Freqfleet lines), to tell a slow bot from a lost
    acknowledgement."""
    try:
        await async_wait_for(lambda: _count(bus, bot_id, model_id, times), timeout=60, what=what)
    except AssertionError as exc:
        files = BotFiles(settings.gateway_data_dir / "bots", str(bot_id))
        models = models_folder(files.user_data)
        found = [
            f"{path.name}: {path.read_text()[-3000:] if path.is_file() else 'missing'}"
            for path in (files.meta / MODELS_FILE, models / MARKER_FILE, models / ACK_FILE)
        ]
        log = files.log.read_text().splitlines() if files.log.is_file() else []
        lines = [line for line in log if "Freqfleet" in line]
        raise AssertionError("\n".join([str(exc), *found, "bot.log:", *lines[-30:]])) from None


async def test_model_commands_and_routes_refuse_what_they_cannot_do(
    authority: Authority,
    models: TrainedModels,
    simulator: SimulatorProcess,
    bus_factory: Any,
    cleanup: list[GatewaySettings],
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, redis_url, simulator, authority.tokens)
    cleanup.append(settings)
    bus: Bus = bus_factory(settings.gateway_id)
    bot_id, model_id = uuid.uuid4(), uuid.uuid4()
    async with running_gateway(settings) as gw:
        bundle = signed(authority, models.a, model_id, 1)
        # A model for another timeframe, or without a model for one of the bot's pairs: refused, no bot made.
        for spec, reason in (
            ({"timeframe": "1m"}, "trained on 5m candles, the bot trades 1m"),
            ({"pairs": ["BTC/USDT", "XRP/USDT"], "max_open_trades": 2}, "no model for XRP/USDT"),
        ):
            answer = await bus.answer(await bus.send(start_with(bot_id, 1, bundle, **spec)))
            assert isinstance(answer, CommandRejected)
            assert reason in answer.data.reason
            rejected = await bus.wait(ModelRejected, lambda e, r=reason: r in e.data.reason, bot_id=bot_id)
            assert rejected.data.model_id == model_id
        assert gw.app.state.fleet.bot(bot_id) is None
        # Model commands for a bot this gateway does not run.
        answer = await bus.answer(await bus.send(update_model(bot_id, 2, bundle)))
        assert isinstance(answer, CommandRejected)
        assert "send START_BOT with the model first" in answer.data.reason
        answer = await bus.answer(await bus.send(rollback(bot_id, 2)))
        assert isinstance(answer, CommandRejected)
        assert f"no bot {bot_id}" in answer.data.reason
        # Routes: a token is needed; an unknown bot is 404; a bad pair is 422.
        url = f"/api/v1/bots/{bot_id}/predictions"
        assert (await gw.http.get(url)).status_code == 401
        token = authority.tokens.mint("service")
        response = await gw.http.get(url, headers=bearer(token))
        assert response.status_code == 404
        assert "has no bot" in response.json()["detail"]
        response = await gw.http.get(url, params={"pair": "BTC-USDT"}, headers=bearer(token))
        assert response.status_code == 422
        user = authority.tokens.mint("user")
        assert (await gw.http.get(url, headers=bearer(user))).status_code == 403
