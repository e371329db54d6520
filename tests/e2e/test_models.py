"""FreqAI models end to end: train through the API (a real worker, Freqtrade on the simulator), deploy to a running
FreqAI bot (a real gateway and a real Freqtrade process), MODEL_LOADED, predictions through the management API,
a second version swapped in without a new process, and a rollback that restores the first one's predictions.

The second version is an externally trained bundle (model B of ``tests/freqai_models.py``: the same strategy, the
same FreqAI parameters, other training days) registered through the upload route; the first is trained with the
same parameters, so the swap is the in-process one (no ``reload_config``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Page, Stack, bearer, gateway_bots, wait_bot
from tests.freqai_models import FREQAI, FREQAI_CLASS, FREQAI_STRATEGY, trained_models
from tests.helpers import async_wait_for

pytestmark = pytest.mark.slow

PAIRS = ["BTC/USDT", "ETH/USDT"]
LABEL = "&-s_close"


async def model_state(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str, model_id: str) -> Any:
    """The bot's model once it predicts with ``model_id`` (MODEL_LOADED came back)."""

    async def loaded() -> Any:
        body = (await client.get(f"/bots/{bot_id}/model", headers=headers)).json()
        return body if (body["model_state"], body["model_loaded_id"]) == ("loaded", model_id) else None

    try:
        return await async_wait_for(loaded, timeout=240, interval=0.5, what=f"model {model_id} loaded")
    except AssertionError as exc:
        last = (await client.get(f"/bots/{bot_id}/model", headers=headers)).json()
        raise AssertionError(f"{exc}; the bot's model reads {last}") from None


async def predictions_of(client: httpx.AsyncClient, headers: dict[str, str], bot_id: str, model_id: str) -> Any:
    """The bot's predictions once every pair's come from ``model_id``."""

    async def made_by() -> Any:
        response = await client.get(f"/bots/{bot_id}/predictions", headers=headers)
        if response.status_code != 200:
            return None
        body = response.json()
        return body if all(p["model_id"] == model_id for p in body["predictions"]) else None

    return await async_wait_for(made_by, timeout=120, interval=0.5, what=f"predictions of model {model_id}")


def by_pair(predictions: Any) -> dict[str, tuple[str, float]]:
    return {p["pair"]: (p["candle_time"], p["predictions"][LABEL]) for p in predictions["predictions"]}


async def test_train_deploy_swap_and_roll_back_a_model_in_a_running_bot(
    stack: Stack,
    client: httpx.AsyncClient,
    tmp_path_factory: pytest.TempPathFactory,
    page: Page,
    screenshots: Path,
) -> None:
    admin = bearer(stack.admin_token)
    strategy = await client.post("/strategies", json={"name": "freqai", "source": FREQAI_STRATEGY}, headers=admin)
    assert strategy.status_code == 201, strategy.text

    # Train version 1 on the worker.
    started = time.monotonic()
    queued = await client.post(
        "/models/train",
        json={"name": "e2e", "pairs": PAIRS, "days": 2, "freqai": FREQAI},
        headers=admin,
    )
    assert queued.status_code == 202, queued.text
    v1_id = queued.json()["id"]

    async def trained() -> Any:
        model = (await client.get(f"/models/{v1_id}", headers=admin)).json()
        assert model["status"] != "failed", model
        return model if model["status"] == "succeeded" else None

    v1 = await async_wait_for(trained, timeout=300, interval=1, what="the training")
    training_seconds = time.monotonic() - started
    assert "could not report training progress" not in stack.services["worker"].last_run()

    # Version 2 of another name: an externally trained bundle, uploaded.
    other = trained_models(tmp_path_factory, stack.simulator.url).b
    uploaded = await client.post(
        "/models/upload",
        files={"file": ("b.tar.zst", other.compressed)},
        data={"name": "external", "strategy_class": FREQAI_CLASS},
        headers=admin,
    )
    assert uploaded.status_code == 201, uploaded.text
    v2 = uploaded.json()
    assert v2["sha256"] == other.sha256

    # A FreqAI bot with version 1: it starts predicting without training.
    bot = await client.post(
        "/bots",
        json={
            "name": "freqai-e2e",
            "strategy_id": strategy.json()["id"],
            "pairs": PAIRS,
            "timeframe": "5m",
            "stake_amount": "100",
            "model_id": v1_id,
        },
        headers=admin,
    )
    assert bot.status_code == 201, bot.text
    bot_id = bot.json()["id"]
    assert (await client.post(f"/bots/{bot_id}/start", headers=admin)).status_code == 200
    await wait_bot(client, admin, bot_id, "running", timeout=120)
    started = time.monotonic()
    await model_state(client, admin, bot_id, v1_id)
    first = await predictions_of(client, admin, bot_id, v1_id)
    start_seconds = time.monotonic() - started
    assert first["model"]["model_id"] == v1_id
    assert {p["pair"] for p in first["predictions"]} == set(PAIRS)
    for prediction in first["predictions"]:
        assert isinstance(prediction["predictions"][LABEL], float)
        assert prediction["do_predict"] in (0, 1)
        assert prediction["model_version"] == v1["version"]
        assert prediction["model_sha256"] == v1["sha256"]
    pid = (await gateway_bots(stack))[bot_id]["pid"]

    # Deploy version 2: swapped into the same process.
    started = time.monotonic()
    deployed = await client.post(f"/bots/{bot_id}/model", json={"model_id": v2["id"]}, headers=admin)
    assert deployed.status_code == 202, deployed.text
    await model_state(client, admin, bot_id, v2["id"])
    second = await predictions_of(client, admin, bot_id, v2["id"])
    swap_seconds = time.monotonic() - started
    assert (await gateway_bots(stack))[bot_id]["pid"] == pid
    first_values, second_values = by_pair(first), by_pair(second)
    assert first_values != second_values  # another model, other predictions

    # Roll back: version 1 again, from the gateway's store, with version 1's predictions.
    started = time.monotonic()
    rolled = await client.post(f"/bots/{bot_id}/model/rollback", headers=admin)
    assert rolled.status_code == 202, rolled.text
    assert rolled.json()["deployment"]["transfer"] == "cached"
    await model_state(client, admin, bot_id, v1_id)
    third = await predictions_of(client, admin, bot_id, v1_id)
    rollback_seconds = time.monotonic() - started
    assert (await gateway_bots(stack))[bot_id]["pid"] == pid
    assert {p["model_sha256"] for p in third["predictions"]} == {v1["sha256"]}
    for pair, (candle, value) in by_pair(third).items():
        if candle == first_values[pair][0]:  # the same candle: the same prediction as before the swap
            assert value == pytest.approx(first_values[pair][1])

    history = (await client.get(f"/bots/{bot_id}/model", headers=admin)).json()["history"]
    assert [(d["action"], d["state"], d["model_id"]) for d in history] == [
        ("rollback", "loaded", v1_id),
        ("deploy", "loaded", v2["id"]),
        ("start", "loaded", v1_id),
    ]
    # The dashboard's models page shows both versions with their metrics, its bot page the model history.
    await page.log_in(ADMIN_EMAIL, ADMIN_PASSWORD)
    await page.page.goto(f"{stack.management}/#/models")
    await page.page.wait_for_selector(f'#models-list tr[data-model="{v2["id"]}"]', timeout=30_000)
    assert await page.page.locator("#models-list tr[data-model]").count() == 2
    await page.shot("models", screenshots)
    await page.page.goto(f"{stack.management}/#/gateways")  # an admin's page: the gateway with its host's load
    load = page.page.locator(f'#gateways tr[data-gateway="{stack.gateway_id}"] td.load')
    await load.wait_for(timeout=30_000)
    assert "CPU" in (await load.text_content() or "")
    # and its market-data relay: the IP's weight against the exchange's limit, what its cache answered
    market = page.page.locator(f'#gateways tr[data-gateway="{stack.gateway_id}"] td.market')
    assert "of 6,000 weight/min" in (await market.text_content() or "")
    assert "% from cache" in (await market.text_content() or "")
    await page.shot("gateways", screenshots)
    # The audit page, searched by who acted: only the admin's entries.
    await page.page.goto(f"{stack.management}/#/audit")
    await page.page.select_option('#audit-search select[name="actor_id"]', label=ADMIN_EMAIL)
    await page.page.click('#audit-search button[type="submit"]')
    await page.page.wait_for_function(
        """email => {
            const whos = [...document.querySelectorAll('#audit-results tbody tr td:nth-child(2)')];
            return whos.length > 0 && whos.every(td => td.textContent.startsWith(email));
        }""",
        arg=ADMIN_EMAIL,
        timeout=30_000,
    )
    actions = await page.page.locator("#audit-results tbody tr td:nth-child(3)").all_text_contents()
    assert "model.train" in actions, actions
    print(
        f"training {training_seconds:.1f} s; start to predictions {start_seconds:.1f} s; swap {swap_seconds:.1f} s; "
        f"rollback {rollback_seconds:.1f} s"
    )
    assert (await client.post(f"/bots/{bot_id}/stop", headers=admin)).status_code == 200
    await wait_bot(client, admin, bot_id, "stopped", timeout=60)
