"""The model registry through the real management server: training requests, uploads (and what is refused),
deploy and rollback as commands on the gateway's stream (the gateway is played by the test), model events.

The bundle is a real one (``trained``: a FreqAI training on the exchange simulator); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import zstandard

from management_server.freqai.tasks import TRAIN_TASK
from management_server.users.models import Role
from shared.freqai.bundle import MANIFEST
from tests.management_server.conftest import Management
from tests.management_server.freqai.conftest import (
    EXAMPLE_SOURCE,
    PAIRS,
    Trained,
    sign_in,
    upload_bundle,
    upload_strategy,
)
from tests.trading_gateway.bots.conftest import ALWAYS_ENTER


async def queued_trainings(redis_url: str) -> list[dict[str, Any]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.lrange("celery", 0, -1)
    finally:
        await client.aclose()
    return [h for item in raw if (h := json.loads(item)["headers"])["task"] == TRAIN_TASK]


@contextmanager
def settings_changed(management: Management, **changes: Any) -> Iterator[None]:
    original = management.app.state.settings
    management.app.state.settings = original.model_copy(update=changes)
    try:
        yield
    finally:
        management.app.state.settings = original


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def bundle_tar(trained: Trained) -> bytes:
    return zstandard.ZstdDecompressor().decompress(trained.path.read_bytes(), max_output_size=64 * 1024 * 1024)


# ----------------------------------------------------------------------------------------- training requests


async def test_a_training_is_queued_checked_and_owned(management: Management, redis_url: str) -> None:
    alice = await sign_in(management, "alice@example.com")
    bob = await sign_in(management, "bob@example.com")
    admin = await sign_in(management, "root@example.com", Role.admin)

    body = {"pairs": PAIRS, "timeframe": "5m", "days": 2, "freqai": {"model_training_parameters": {"n_estimators": 20}}}
    queued = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert queued.status_code == 202, queued.text
    model = queued.json()
    assert (model["status"], model["name"], model["version"], model["source"]) == (
        "queued",
        "FreqaiExample",
        1,
        "training",
    )
    assert (model["strategy_id"], model["strategy_class"], model["freqai_model"]) == (
        None,
        "FreqaiExample",
        "LightGBMRegressor",
    )
    assert model["pairs"] == PAIRS
    trained_from = datetime.fromisoformat(model["trained_from"])
    trained_to = datetime.fromisoformat(model["trained_to"])
    assert trained_to - trained_from == timedelta(days=2)
    assert datetime.now(UTC) - timedelta(hours=6, minutes=6) < trained_to <= datetime.now(UTC) - timedelta(hours=6)
    assert trained_to.timestamp() % 300 == 0  # on a whole candle
    [task] = await queued_trainings(redis_url)
    assert task["task"] == TRAIN_TASK
    assert model["id"] in task["argsrepr"]

    again = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert again.json()["version"] == 2  # the same name: the next version
    third = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert third.status_code == 409  # at most 2 under way per user
    assert third.json()["detail"].startswith("You have 2 trainings queued or running (at most 2)")

    # Only the owner (and admins) see a model.
    assert (await management.client.get(f"/api/v1/models/{model['id']}", headers=bob)).status_code == 404
    assert (await management.client.get("/api/v1/models", headers=bob)).json() == []
    detail = await management.client.get(f"/api/v1/models/{model['id']}", headers=admin)
    assert detail.status_code == 200
    assert detail.json()["freqai"] == {"model_training_parameters": {"n_estimators": 20}}
    assert detail.json()["strategy_sha256"] == hashlib.sha256(EXAMPLE_SOURCE.encode()).hexdigest()
    assert detail.json()["log_tail"] is None
    listed = (await management.client.get("/api/v1/models?status=queued", headers=admin)).json()
    assert [m["version"] for m in listed] == [2, 1]
    assert len((await management.client.get("/api/v1/models", headers=alice)).json()) == 2

    audit = await management.audit("model.train")
    assert [(e.outcome, e.actor) for e in audit] == [
        ("success", "alice@example.com"),
        ("success", "alice@example.com"),
        ("failure", "alice@example.com"),
    ]
    assert audit[0].details is not None
    assert audit[0].details["pairs"] == PAIRS


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"freqai": {"identifier": "mine"}}, 422, "freqai may set only"),
        # Values that would reach freqtrade's command line as options (argv injection): refused, field named.
        (
            {"freqai": {"feature_parameters": {"include_corr_pairlist": ["--config", "../../../master.keys"]}}},
            422,
            "freqai.feature_parameters.include_corr_pairlist.0: String should match pattern",
        ),
        ({"freqai": {"feature_parameters": {"include_timeframes": ["--userdir"]}}}, 422, "include_timeframes.0"),
        ({"freqai": {"model_training_parameters": {"n_jobs": "--datadir"}}}, 422, "model_training_parameters"),
        ({"freqai_model": "PyTorchMLPRegressor"}, 422, "unknown FreqAI model 'PyTorchMLPRegressor'"),
        ({"timeframe": "7m"}, 422, "unknown timeframe"),
        ({"pairs": ["BTC/USDT", "BTC/USDT"]}, 422, "a pair is listed twice"),
        ({"pairs": ["BTC/USDT", "ETH/BTC"]}, 400, "all pairs must be quoted in one (the stake) currency"),
        ({"end": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, 400, "the training window must end 6 h"),
        ({"days": 0}, 422, "greater than or equal to 1"),
        ({"end": "0001-01-01T00:00:00Z"}, 422, "end must be between 2010 and 2100"),
        ({"strategy_id": str(uuid.uuid4())}, 404, "No such strategy."),
    ],
)
async def test_a_training_that_cannot_run_is_refused_with_the_reason(
    management: Management, redis_url: str, changes: dict[str, Any], code: int, message: str
) -> None:
    alice = await sign_in(management, "alice@example.com")
    body = {"pairs": PAIRS} | changes
    response = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert response.status_code == code, response.text
    assert message in json.dumps(response.json()["detail"]), response.json()
    assert await queued_trainings(redis_url) == []
    assert (await management.client.get("/api/v1/models", headers=alice)).json() == []


async def test_only_an_approved_strategy_is_trained(management: Management, redis_url: str) -> None:
    alice = await sign_in(management, "alice@example.com")
    admin = await sign_in(management, "root@example.com", Role.admin)
    strategy = await upload_strategy(management, alice)
    body = {"strategy_id": strategy["id"], "pairs": PAIRS, "name": "mine"}
    refused = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert refused.status_code == 409
    assert "an admin must approve it first" in refused.json()["detail"]
    await management.client.post(f"/api/v1/strategies/{strategy['id']}/approve", headers=admin)
    queued = await management.client.post("/api/v1/models/train", json=body, headers=alice)
    assert queued.status_code == 202, queued.text
    assert (queued.json()["strategy_id"], queued.json()["name"]) == (strategy["id"], "mine")
    assert len(await queued_trainings(redis_url)) == 1

    # A strategy with no FreqAI in it is refused when asked, not queued to fail on the worker.
    plain = await management.client.post(
        "/api/v1/strategies", json={"name": "plain", "source": ALWAYS_ENTER.read_text()}, headers=admin
    )
    body = {"strategy_id": plain.json()["id"], "pairs": PAIRS, "name": "no-freqai"}
    refused = await management.client.post("/api/v1/models/train", json=body, headers=admin)
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "This training can't run: AlwaysEnter is not a FreqAI strategy: it lacks set_freqai_targets (its '&-' "
        "target columns); a feature_engineering_* method (its '%-' features); a call of "
        "self.freqai.start(dataframe, metadata, self) in populate_indicators "
        "(examples/strategies/FreqaiExample.py has all three)."
    )
    assert len(await queued_trainings(redis_url)) == 1


# ----------------------------------------------------------------------------------------- uploads


@pytest.mark.slow  # the session's models are trained once, on first use
async def test_an_uploaded_bundle_is_checked_registered_and_stored_encrypted(
    management: Management, trained: Trained
) -> None:
    admin = await sign_in(management, "root@example.com", Role.admin)
    alice = await sign_in(management, "alice@example.com")
    content = trained.path.read_bytes()
    assert (await upload_bundle(management, alice, content)).status_code == 403  # admins only

    response = await upload_bundle(management, admin, content)
    assert response.status_code == 201, response.text
    model = response.json()
    packed = trained.packed
    assert (model["status"], model["source"], model["name"], model["version"]) == (
        "succeeded",
        "upload",
        "example",
        1,
    )
    assert (model["sha256"], model["size"]) == (packed.sha256, packed.size)
    assert model["pairs"] == PAIRS
    assert model["timeframe"] == "5m"
    assert model["freqai_model"] == "LightGBMRegressor"
    assert model["strategy_class"] == "FreqaiExample"
    assert model["features"]["BTC/USDT"] == packed.manifest.pairs["BTC/USDT"].features
    assert any(f.startswith("%-rsi-period") for f in model["features"]["ETH/USDT"])
    assert model["labels"] == ["&-s_close"]
    assert set(model["metrics"]) == set(PAIRS)
    assert model["metrics"]["BTC/USDT"]["test_rows"] > 0
    assert model["library_versions"]["freqtrade"] == packed.manifest.versions["freqtrade"]
    assert datetime.fromisoformat(model["trained_to"]) == packed.manifest.trained_to

    # Stored encrypted under the master key: the file is not the bundle, and decrypts to a zstd stream of it.
    registry = management.app.state.model_registry
    stored = registry.store.path(uuid.UUID(model["id"]))
    raw = stored.read_bytes()
    assert content[:4] not in raw[:64]
    assert bundle_tar(trained)[:512] not in raw
    decrypted = b"".join(registry.store.segments(uuid.UUID(model["id"])))
    assert model["compressed_size"] == len(decrypted)
    assert hashlib.sha256(
        zstandard.ZstdDecompressor().decompress(decrypted, max_output_size=packed.size)
    ).hexdigest() == (packed.sha256)
    assert list((registry.store.root / ".uploads").iterdir()) == []  # the upload's work folder is gone
    assert oct(registry.store.root.stat().st_mode & 0o777) == "0o700"

    # The same bundle again, plain (an uncompressed tar), is the next version of the name.
    plain = await upload_bundle(management, admin, bundle_tar(trained))
    assert plain.status_code == 201, plain.text
    assert (plain.json()["version"], plain.json()["sha256"]) == (2, packed.sha256)
    assert [(e.actor, e.outcome) for e in await management.audit("model.upload")] == [
        ("root@example.com", "success"),
        ("root@example.com", "success"),
    ]
    [denied] = await management.audit("authz.denied")
    assert (denied.actor, denied.target_id) == ("alice@example.com", "POST /api/v1/models/upload")


@pytest.mark.slow
async def test_a_tampered_oversized_or_unsafe_bundle_is_refused_with_the_reason(
    management: Management, trained: Trained
) -> None:
    admin = await sign_in(management, "root@example.com", Role.admin)
    content = trained.path.read_bytes()
    tar = bundle_tar(trained)

    tampered = bytearray(content)
    tampered[len(tampered) // 2] ^= 0x01  # one byte changed in transit
    refused = await upload_bundle(management, admin, bytes(tampered))
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("The bundle is refused: the bundle is not valid zstd data")

    # One byte of a model file changed, in a plain tar (so no zstd checksum): its manifest entry catches it.
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        model_file = next(m for m in archive.getmembers() if m.name.endswith("model.joblib"))
        manifest = archive.extractfile(MANIFEST)
        assert manifest is not None
        manifest_bytes = manifest.read()
    changed = bytearray(tar)
    changed[model_file.offset_data + 100] ^= 0x01
    refused = await upload_bundle(management, admin, bytes(changed))
    assert refused.status_code == 422
    assert "does not match its manifest entry (size or sha256)" in refused.json()["detail"]

    escaping = tar_bytes({MANIFEST: manifest_bytes, "../outside.pkl": b"code"})
    refused = await upload_bundle(management, admin, escaping)
    assert refused.status_code == 422
    assert "the archive holds a path outside the model folder: '../outside.pkl'" in refused.json()["detail"]

    # A decompression bomb: 64 MiB of zeros in a few kilobytes stops at the limit.
    bomb = zstandard.ZstdCompressor(level=3).compress(tar_bytes({MANIFEST: b"\0" * (64 * 1024 * 1024)}))
    assert len(bomb) < 100_000
    with settings_changed(management, model_max_bundle_bytes=1024 * 1024):
        refused = await upload_bundle(management, admin, bomb)
        assert refused.status_code == 413
        assert "larger than 1048576 bytes uncompressed" in refused.json()["detail"]
    with settings_changed(management, model_max_bundle_bytes=trained.packed.size - 1):
        too_big = await upload_bundle(management, admin, content)  # a real bundle, one byte over the limit
        assert too_big.status_code == 413
        assert f"larger than {trained.packed.size - 1} bytes uncompressed" in too_big.json()["detail"]
    with settings_changed(management, model_max_upload_bytes=1024):  # refused by its Content-Length
        huge = await upload_bundle(management, admin, content)
        assert huge.status_code == 413
        assert huge.json()["detail"].startswith("The upload is ")
        assert huge.json()["detail"].endswith(" bytes; at most 1024 are taken (FREQFLEET_MODEL_MAX_UPLOAD_BYTES).")
    with settings_changed(management, model_max_upload_bytes=len(content) - 1):  # refused while it is copied
        huge = await upload_bundle(management, admin, content)
        assert huge.status_code == 413
        assert huge.json()["detail"] == (
            f"The upload is larger than {len(content) - 1} bytes (FREQFLEET_MODEL_MAX_UPLOAD_BYTES)."
        )

    not_a_bundle = await upload_bundle(management, admin, b"hello, not a tar")
    assert not_a_bundle.status_code == 422
    assert "not a valid tar archive" in not_a_bundle.json()["detail"]
    no_file = await management.client.post("/api/v1/models/upload", data={"name": "x"}, headers=admin)
    assert no_file.status_code == 422
    assert no_file.json()["detail"] == "The form has no file part named 'file' holding the bundle."
    bad_name = await upload_bundle(management, admin, content, name="../x")
    assert bad_name.status_code == 422

    assert (await management.client.get("/api/v1/models", headers=admin)).json() == []
    assert list((management.app.state.model_registry.store.root).glob("*.bundle")) == []
    outcomes = {(e.outcome, e.reason is not None) for e in await management.audit("model.upload")}
    assert outcomes == {("failure", True)}
