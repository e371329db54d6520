"""/api/v1/models (train, upload, list, read), /api/v1/bots/{id}/model (deploy, rollback, history),
/api/v1/bots/{id}/predictions (the bot's FreqAI outputs, through its gateway), and the model-signing public keys
at /.well-known/model-keys.json."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.audit.models import Outcome
from management_server.auth.deps import AdminPrincipal, Audit, Reader, Trader
from management_server.bots.deps import LockedBot, VisibleBot
from management_server.bots.models import Bot
from management_server.db import SessionDep
from management_server.deps import GatewayClientDep, ModelRegistryDep, RelayDep, SettingsDep, TrainQueueDep, built
from management_server.errors import errors
from management_server.freqai import deploy as deployments
from management_server.freqai import predictions, service, upload
from management_server.freqai.deps import NOT_FOUND, VisibleModel
from management_server.freqai.models import ModelStatus
from management_server.freqai.schemas import (
    NAME_PATTERN,
    BotModelOut,
    DeployIn,
    DeploymentOut,
    DeployOut,
    ModelDetail,
    ModelKeysOut,
    ModelOut,
    TrainIn,
)
from management_server.freqai.signing import WELL_KNOWN_PATH
from management_server.freqai.upload import STRATEGY_CLASS
from shared.freqai.predictions import PredictionsOut
from shared.metrics import MODEL_DEPLOYS

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=errors(400, 401, 403, 404, 409, 429))
bots_router = APIRouter(prefix="/api/v1/bots", tags=["models"], responses=errors(401, 403, 404, 409, 429))
keys_router = APIRouter(tags=["models"])

TRAIN_UNAVAILABLE = "The training could not be queued: the task broker did not answer. Try again in a moment."
PAIR = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$"

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The bundle: a tar (zstd-compressed or plain) in Freqfleet's bundle format "
                            "(manifest.json, pair_dictionary.json, each pair's model files).",
                        },
                        "name": {"type": "string", "maxLength": 100, "pattern": NAME_PATTERN},
                        "strategy_class": {
                            "type": "string",
                            "maxLength": 100,
                            "pattern": STRATEGY_CLASS,
                            "description": "The strategy it was trained for (bots running another are refused).",
                        },
                    },
                }
            }
        },
    }
}


# ----------------------------------------------------------------------------------------- models


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ModelOut,
    responses=errors(503),
)
async def train_model(
    body: TrainIn,
    session: SessionDep,
    principal: Trader,
    settings: SettingsDep,
    queue: TrainQueueDep,
    audit: Audit,
) -> JSONResponse:
    """Train a FreqAI model on a worker: an approved strategy of yours (or the shipped FreqaiExample), its pairs
    and timeframe, FreqAI parameters, `days` of candles before `end`. The answer is the new version, `queued`;
    follow it with `GET /api/v1/models/{id}` (running with progress, then succeeded or failed)."""
    if queue is None:
        raise HTTPException(503, "Training is not available: this server has no task broker.")
    refused = (service.ModelRefused,)
    async with audit.refusals(session, "model.train", refused, target_type="model", target_id=None):
        max_active = settings.model_training_max_active
        model = await service.queue_training(session, principal.viewer, body, max_active=max_active)
        await session.commit()
    task_id = await queue.send(model.id)
    if task_id is None:
        model.status = ModelStatus.failed.value
        model.error = TRAIN_UNAVAILABLE
        await session.commit()
        await audit.record(
            "model.train", Outcome.failure, target_type="model", target_id=model.id, reason=TRAIN_UNAVAILABLE
        )
        raise HTTPException(503, TRAIN_UNAVAILABLE)
    await audit.record(
        "model.train",
        Outcome.success,
        target_type="model",
        target_id=model.id,
        details={
            "name": model.name,
            "version": model.version,
            "strategy_class": model.strategy_class,
            "pairs": model.pairs,
            "freqai_model": model.freqai_model,
            "task_id": task_id,
        },
    )
    return JSONResponse(status_code=202, content=ModelOut.model_validate(model).model_dump(mode="json"))


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelDetail,
    openapi_extra=UPLOAD_BODY,
    responses={
        411: {"description": "The request did not say its length"},
        413: {"description": "The upload or the unpacked bundle is larger than allowed"},
        422: {"description": "The bundle is refused; the detail says why"},
    },
)
async def upload_model(
    request: Request,  # the multipart body is read by hand: its length checked first, the file streamed to disk
    session: SessionDep,
    admin: AdminPrincipal,
    settings: SettingsDep,
    registry: ModelRegistryDep,
    audit: Audit,
) -> JSONResponse:
    """Register an externally trained bundle (admins): multipart `file` (the bundle, a zstd-compressed or plain
    tar in Freqfleet's bundle format), optional `name` and `strategy_class`. It is checked as a gateway checks a
    received one (bounded decompression, only the expected files, nothing outside the model folder, every file
    as the manifest says, an allowed model class, the same library versions) before it is registered."""
    max_upload, max_bundle = settings.model_max_upload_bytes, settings.model_max_bundle_bytes
    async with audit.refusals(session, "model.upload", (service.ModelRefused,), target_type="model", target_id=None):
        upload.check_length(request.headers.get("content-length"), max_upload)
        form = await request.form(max_files=1, max_fields=3, max_part_size=4096)
        try:
            model = await upload.register(
                session, admin.user, registry.store, form, max_upload=max_upload, max_bundle=max_bundle
            )
        finally:
            await form.close()
    await audit.record(
        "model.upload",
        Outcome.success,
        target_type="model",
        target_id=model.id,
        details={"name": model.name, "version": model.version, "sha256": model.sha256, "size": model.size},
    )
    return JSONResponse(status_code=201, content=ModelDetail.model_validate(model).model_dump(mode="json"))


@router.get("", response_model=list[ModelOut])
async def list_models(
    session: SessionDep,
    principal: Reader,
    status_filter: Annotated[ModelStatus | None, Query(alias="status")] = None,
    name: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ModelOut]:
    """Your model versions (an admin sees everyone's), newest first."""
    models = await service.list_visible(session, principal.viewer, status_filter, name, limit, offset)
    return [ModelOut.model_validate(m) for m in models]


@router.get("/{model_id}", response_model=ModelDetail)
async def get_model(model: VisibleModel) -> ModelDetail:
    """One version: queued, running (with progress), succeeded (sha256, size, features, pairs, trained range,
    metrics) or failed (the reason and the tail of Freqtrade's log)."""
    return ModelDetail.model_validate(model)


# ----------------------------------------------------------------------------------------- bots


async def _bot_model(session: AsyncSession, bot: Bot) -> BotModelOut:
    return BotModelOut(
        bot_id=bot.id,
        model_id=bot.model_id,
        model_state=bot.model_state,
        model_loaded_id=bot.model_loaded_id,
        history=[DeploymentOut.model_validate(d) for d in await deployments.history(session, bot.id)],
    )


@bots_router.get("/{bot_id}/model", response_model=BotModelOut)
async def bot_model(bot: VisibleBot, session: SessionDep) -> BotModelOut:
    """The bot's model, the state of its latest deployment, and its history of models (newest first)."""
    return await _bot_model(session, bot)


@dataclass(frozen=True)
class BotModelChange:
    """Deploying a model to the bot of the path, or rolling its model back; its row locked. A refusal is audited
    as the action's failure; a deployment as its success, its command (if any) sent at once."""

    bot: LockedBot
    session: SessionDep
    principal: Trader
    registry: ModelRegistryDep
    relay: RelayDep
    audit: Audit

    async def deploy(self, model_id: uuid.UUID) -> JSONResponse:
        session, principal = self.session, self.principal
        async with self._refusals("deploy", details={"model_id": str(model_id)}):
            model = await service.visible(session, principal.viewer, model_id)
            if model is None:
                raise service.ModelRefused(404, NOT_FOUND)
            result = await deployments.deploy(session, self.registry, self.bot, model, principal.user.id)
            await session.commit()
        return await self._deployed("deploy", result)

    async def rollback(self) -> JSONResponse:
        async with self._refusals("rollback"):
            result = await deployments.rollback(self.session, self.registry, self.bot, self.principal.user.id)
            await self.session.commit()
        return await self._deployed("rollback", result)

    def _refusals(self, action: str, details: dict[str, Any] | None = None) -> AbstractAsyncContextManager[None]:
        refused = (service.ModelRefused,)
        action = f"bot.model.{action}"
        return self.audit.refusals(
            self.session, action, refused, target_type="bot", target_id=self.bot.id, details=details
        )

    async def _deployed(self, action: str, result: deployments.DeployResult) -> JSONResponse:
        deployment = result.deployment
        await self.audit.record(
            f"bot.model.{action}",
            Outcome.success,
            target_type="bot",
            target_id=result.bot.id,
            details={
                "model_id": str(deployment.model_id),
                "previous_model_id": str(deployment.previous_model_id) if deployment.previous_model_id else None,
                "command_id": str(deployment.command_id) if deployment.command_id else None,
                "command_type": deployment.command_type,
                "transfer": deployment.transfer,
                "generation": deployment.generation,
            },
        )
        if result.command is not None:
            self.relay.wake()
            MODEL_DEPLOYS.labels("sent").inc()
        body = await _bot_model(self.session, result.bot)
        out = DeployOut(**body.model_dump(), deployment=DeploymentOut.model_validate(deployment), notice=result.notice)
        return JSONResponse(status_code=202, content=out.model_dump(mode="json"))


ModelChange = Annotated[BotModelChange, Depends(built(BotModelChange))]


@bots_router.post("/{bot_id}/model", status_code=status.HTTP_202_ACCEPTED, response_model=DeployOut)
async def deploy_model(body: DeployIn, change: ModelChange) -> JSONResponse:
    """Deploy a model version to the bot. A running bot gets it at once (UPDATE_MODEL: verified by the gateway,
    swapped in without a new process; `model_state` becomes `loaded` when the bot predicts with it); a stopped
    bot gets it with its next start."""
    return await change.deploy(body.model_id)


@bots_router.post("/{bot_id}/model/rollback", status_code=status.HTTP_202_ACCEPTED, response_model=DeployOut)
async def rollback_model(change: ModelChange) -> JSONResponse:
    """Go back to the model the bot's current one replaced (again: further back). A running bot reinstalls it
    from its gateway's store when it ran it before (ROLLBACK_MODEL, no transfer), else receives it again."""
    return await change.rollback()


@bots_router.get(
    "/{bot_id}/predictions",
    response_model=PredictionsOut,
    responses={**errors(400, 503), 502: {"description": "The gateway or the bot did not answer as expected"}},
)
async def bot_predictions(
    bot: VisibleBot,
    session: SessionDep,
    client: GatewayClientDep,
    pair: Annotated[str | None, Query(pattern=PAIR, description="One pair, e.g. BTC/USDT; all when left out.")] = None,
) -> PredictionsOut:
    """The running bot's latest FreqAI outputs per pair (prediction, do_predict, DI values, the model version
    that made them, their candle), read from the bot through its gateway."""
    try:
        return await predictions.read(session, client, bot, pair)
    except predictions.PredictionsUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from None


# ----------------------------------------------------------------------------------------- keys


@keys_router.get(WELL_KNOWN_PATH, summary="Public keys that verify model bundles", response_model=ModelKeysOut)
async def model_keys(registry: ModelRegistryDep) -> dict[str, Any]:
    """The management server's model-signing public keys (JWKS form); gateways verify every bundle with them."""
    keys: dict[str, Any] = registry.signing_keys.jwks()
    return keys
