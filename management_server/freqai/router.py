"""/api/v1/models (train, upload, list, read), /api/v1/bots/{id}/model (deploy, rollback, history),
/api/v1/bots/{id}/predictions (the bot's FreqAI outputs, through its gateway), and the model-signing public keys
at /.well-known/model-keys.json."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile

from management_server.audit.models import Outcome
from management_server.auth.deps import AdminPrincipal, Principal, Reader, Trader, client_ip
from management_server.bots.models import Bot, DesiredState
from management_server.bots.service import visible as visible_bot
from management_server.db import SessionDep
from management_server.errors import errors
from management_server.freqai import deploy as deployments
from management_server.freqai import service
from management_server.freqai.deploy import ModelRegistry
from management_server.freqai.models import ModelStatus, ModelVersion
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
from management_server.freqai.tasks import TrainQueue
from management_server.gateways.client import GatewayClient
from management_server.gateways.models import Gateway
from shared.freqai.bundle import BundleError, SizeExceeded
from shared.freqai.predictions import PredictionsOut
from shared.metrics import MODEL_DEPLOYS

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=errors(400, 401, 403, 404, 409, 429))
bots_router = APIRouter(prefix="/api/v1/bots", tags=["models"], responses=errors(401, 403, 404, 409, 429))
keys_router = APIRouter(tags=["models"])

NOT_FOUND = "No such model."
BOT_NOT_FOUND = "No such bot."
TRAIN_UNAVAILABLE = "The training could not be queued: the task broker did not answer. Try again in a moment."
UPLOAD_SLACK = 64 * 1024  # multipart headers around the file
PAIR = r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$"
COPY_BLOCK = 1024 * 1024

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
                            "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
                            "description": "The strategy it was trained for (bots running another are refused).",
                        },
                    },
                }
            }
        },
    }
}


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.model_registry
    return registry


async def _audit(
    request: Request,
    action: str,
    outcome: Outcome,
    principal: Principal,
    *,
    target_type: str,
    target_id: uuid.UUID | str | None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await request.app.state.audit.record(
        action,
        outcome,
        principal.actor,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        ip=client_ip(request),
        details=details,
    )


# ----------------------------------------------------------------------------------------- models


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ModelOut,
    responses=errors(503),
)
async def train_model(body: TrainIn, request: Request, session: SessionDep, principal: Trader) -> JSONResponse:
    """Train a FreqAI model on a worker: an approved strategy of yours (or the shipped FreqaiExample), its pairs
    and timeframe, FreqAI parameters, `days` of candles before `end`. The answer is the new version, `queued`;
    follow it with `GET /api/v1/models/{id}` (running with progress, then succeeded or failed)."""
    settings = request.app.state.settings
    queue: TrainQueue | None = getattr(request.app.state, "train_queue", None)
    if queue is None:
        raise HTTPException(503, "Training is not available: this server has no task broker.")
    try:
        model = await service.queue_training(
            session, principal.viewer, body, max_active=settings.model_training_max_active
        )
        await session.commit()
    except service.ModelRefused as exc:
        await session.rollback()
        await _audit(
            request, "model.train", Outcome.failure, principal, target_type="model", target_id=None, reason=str(exc)
        )
        raise HTTPException(exc.status, str(exc)) from None
    task_id = await queue.send(model.id)
    if task_id is None:
        model.status = ModelStatus.failed.value
        model.error = TRAIN_UNAVAILABLE
        await session.commit()
        await _audit(
            request,
            "model.train",
            Outcome.failure,
            principal,
            target_type="model",
            target_id=model.id,
            reason=TRAIN_UNAVAILABLE,
        )
        raise HTTPException(503, TRAIN_UNAVAILABLE)
    await _audit(
        request,
        "model.train",
        Outcome.success,
        principal,
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
async def upload_model(request: Request, session: SessionDep, admin: AdminPrincipal) -> JSONResponse:
    """Register an externally trained bundle (admins): multipart `file` (the bundle, a zstd-compressed or plain
    tar in Freqfleet's bundle format), optional `name` and `strategy_class`. It is checked as a gateway checks a
    received one (bounded decompression, only the expected files, nothing outside the model folder, every file
    as the manifest says, an allowed model class, the same library versions) before it is registered."""
    settings = request.app.state.settings
    registry = _registry(request)

    async def refuse(code: int, reason: str) -> HTTPException:
        await _audit(
            request, "model.upload", Outcome.failure, admin, target_type="model", target_id=None, reason=reason
        )
        return HTTPException(code, reason)

    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise await refuse(411, "Send the upload with a Content-Length header.")
    if int(length) > settings.model_max_upload_bytes + UPLOAD_SLACK:
        raise await refuse(
            413,
            f"The upload is {int(length)} bytes; at most {settings.model_max_upload_bytes} are taken "
            "(FREQFLEET_MODEL_MAX_UPLOAD_BYTES).",
        )
    form = await request.form(max_files=1, max_fields=3, max_part_size=4096)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise await refuse(422, "The form has no file part named 'file' holding the bundle.")
        name = _text_field(form.get("name"), "name", NAME_PATTERN)
        strategy_class = _text_field(form.get("strategy_class"), "strategy_class", r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    except ValueError as exc:
        await form.close()
        raise await refuse(422, str(exc)) from None
    try:
        with service.upload_workdir(registry.store) as tmp:
            workdir = Path(tmp)
            upload = workdir / "upload"
            size = await _save(file, upload, settings.model_max_upload_bytes)
            if size is None:
                raise await refuse(
                    413,
                    f"The upload is larger than {settings.model_max_upload_bytes} bytes "
                    "(FREQFLEET_MODEL_MAX_UPLOAD_BYTES).",
                )
            try:
                checked = await asyncio.to_thread(
                    service.check_upload, upload, workdir, max_size=settings.model_max_bundle_bytes
                )
            except SizeExceeded as exc:
                raise await refuse(413, f"The bundle is refused: {exc}.") from None
            except BundleError as exc:
                raise await refuse(422, f"The bundle is refused: {exc}.") from None
            model = await service.register_upload(
                session, admin.user, registry.store, checked, name=name, strategy_class=strategy_class
            )
            stored_id = model.id
            try:
                await session.commit()
            except BaseException:
                registry.store.delete(stored_id)  # no row: no file either
                raise
    finally:
        await form.close()
    await _audit(
        request,
        "model.upload",
        Outcome.success,
        admin,
        target_type="model",
        target_id=model.id,
        details={"name": model.name, "version": model.version, "sha256": model.sha256, "size": model.size},
    )
    return JSONResponse(status_code=201, content=ModelDetail.model_validate(model).model_dump(mode="json"))


def _text_field(value: object, name: str, pattern: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(pattern, value) or len(value) > 100:
        raise ValueError(f"{name} must match {pattern} (at most 100 characters)")
    return value


async def _save(file: UploadFile, dest: Path, limit: int) -> int | None:
    """Copy the upload to ``dest``; its size, or None when it is over ``limit``."""
    size = 0
    with dest.open("wb") as out:
        while block := await file.read(COPY_BLOCK):
            size += len(block)
            if size > limit:
                return None
            await asyncio.to_thread(out.write, block)
    return size


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
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id)
    if not principal.is_admin:
        query = query.where(ModelVersion.owner_id == principal.user.id)
    if status_filter is not None:
        query = query.where(ModelVersion.status == status_filter.value)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    rows = await session.execute(query.limit(limit).offset(offset))
    return [ModelOut.model_validate(m) for m in rows.scalars()]


@router.get("/{model_id}", response_model=ModelDetail)
async def get_model(model_id: uuid.UUID, session: SessionDep, principal: Reader) -> ModelDetail:
    """One version: queued, running (with progress), succeeded (sha256, size, features, pairs, trained range,
    metrics) or failed (the reason and the tail of Freqtrade's log)."""
    model = await service.visible(session, principal.viewer, model_id)
    if model is None:
        raise HTTPException(404, NOT_FOUND)
    return ModelDetail.model_validate(model)


# ----------------------------------------------------------------------------------------- bots


async def _bot_model(session: SessionDep, bot: Bot) -> BotModelOut:
    return BotModelOut(
        bot_id=bot.id,
        model_id=bot.model_id,
        model_state=bot.model_state,
        model_loaded_id=bot.model_loaded_id,
        history=[DeploymentOut.model_validate(d) for d in await deployments.history(session, bot.id)],
    )


@bots_router.get("/{bot_id}/model", response_model=BotModelOut)
async def bot_model(bot_id: uuid.UUID, session: SessionDep, principal: Reader) -> BotModelOut:
    """The bot's model, the state of its latest deployment, and its history of models (newest first)."""
    bot = await visible_bot(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, BOT_NOT_FOUND)
    return await _bot_model(session, bot)


async def _deploy_response(
    request: Request, session: SessionDep, principal: Principal, action: str, result: deployments.DeployResult
) -> JSONResponse:
    deployment = result.deployment
    await _audit(
        request,
        f"bot.model.{action}",
        Outcome.success,
        principal,
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
        request.app.state.outbox_relay.wake()
        MODEL_DEPLOYS.labels("sent").inc()
    body = await _bot_model(session, result.bot)
    out = DeployOut(**body.model_dump(), deployment=DeploymentOut.model_validate(deployment), notice=result.notice)
    return JSONResponse(status_code=202, content=out.model_dump(mode="json"))


async def _locked_bot(session: SessionDep, principal: Principal, bot_id: uuid.UUID) -> Bot:
    bot = await session.get(Bot, bot_id, with_for_update=True)
    if bot is None or not principal.viewer.may_see(bot.owner_id):
        raise HTTPException(404, BOT_NOT_FOUND)
    return bot


@bots_router.post("/{bot_id}/model", status_code=status.HTTP_202_ACCEPTED, response_model=DeployOut)
async def deploy_model(
    bot_id: uuid.UUID, body: DeployIn, request: Request, session: SessionDep, principal: Trader
) -> JSONResponse:
    """Deploy a model version to the bot. A running bot gets it at once (UPDATE_MODEL: verified by the gateway,
    swapped in without a new process; `model_state` becomes `loaded` when the bot predicts with it); a stopped
    bot gets it with its next start."""
    bot = await _locked_bot(session, principal, bot_id)
    try:
        model = await service.visible(session, principal.viewer, body.model_id)
        if model is None:
            raise service.ModelRefused(404, NOT_FOUND)
        result = await deployments.deploy(session, _registry(request), bot, model, principal.user.id)
        await session.commit()
    except service.ModelRefused as exc:
        await session.rollback()
        await _audit(
            request,
            "bot.model.deploy",
            Outcome.failure,
            principal,
            target_type="bot",
            target_id=bot_id,
            reason=str(exc),
            details={"model_id": str(body.model_id)},
        )
        raise HTTPException(exc.status, str(exc)) from None
    return await _deploy_response(request, session, principal, "deploy", result)


@bots_router.post("/{bot_id}/model/rollback", status_code=status.HTTP_202_ACCEPTED, response_model=DeployOut)
async def rollback_model(bot_id: uuid.UUID, request: Request, session: SessionDep, principal: Trader) -> JSONResponse:
    """Go back to the model the bot's current one replaced (again: further back). A running bot reinstalls it
    from its gateway's store when it ran it before (ROLLBACK_MODEL, no transfer), else receives it again."""
    bot = await _locked_bot(session, principal, bot_id)
    try:
        result = await deployments.rollback(session, _registry(request), bot, principal.user.id)
        await session.commit()
    except service.ModelRefused as exc:
        await session.rollback()
        await _audit(
            request,
            "bot.model.rollback",
            Outcome.failure,
            principal,
            target_type="bot",
            target_id=bot_id,
            reason=str(exc),
        )
        raise HTTPException(exc.status, str(exc)) from None
    return await _deploy_response(request, session, principal, "rollback", result)


@bots_router.get(
    "/{bot_id}/predictions",
    response_model=PredictionsOut,
    responses={**errors(400, 503), 502: {"description": "The gateway or the bot did not answer as expected"}},
)
async def bot_predictions(
    bot_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: Reader,
    pair: Annotated[str | None, Query(pattern=PAIR, description="One pair, e.g. BTC/USDT; all when left out.")] = None,
) -> PredictionsOut:
    """The running bot's latest FreqAI outputs per pair (prediction, do_predict, DI values, the model version
    that made them, their candle), read from the bot through its gateway."""
    bot = await visible_bot(session, principal.viewer, bot_id)
    if bot is None:
        raise HTTPException(404, BOT_NOT_FOUND)
    if bot.gateway_id is None or bot.desired_state not in (DesiredState.running, DesiredState.paused):
        raise HTTPException(409, "The bot is not running: predictions come from a running bot. Start it first.")
    gateway_id = bot.gateway_id
    gateway = await session.get(Gateway, gateway_id)
    api_url = gateway.api_url if gateway is not None and gateway.enrolled else None  # tokens only to enrolled
    await session.rollback()  # no transaction stays open while the gateway answers
    if api_url is None:
        raise HTTPException(503, f"Gateway {gateway_id} has not said where its API is yet: try again shortly.")
    client: GatewayClient = request.app.state.gateway_client
    url = f"{api_url.rstrip('/')}/api/v1/bots/{bot_id}/predictions"
    try:
        response = await client.http.get(
            url,
            params={"pair": pair} if pair else None,
            headers={"Authorization": f"Bearer {client.token(gateway_id)}"},
        )
    except httpx.HTTPError as exc:
        raise HTTPException(503, f"Gateway {gateway_id} did not answer ({type(exc).__name__}): try again.") from None
    detail = _detail(response)
    if response.status_code == 404:
        raise HTTPException(409, f"Gateway {gateway_id} does not run this bot (yet): {detail}")
    if response.status_code in (409, 422):
        raise HTTPException(409 if response.status_code == 409 else 400, detail)
    if response.status_code != 200:
        raise HTTPException(502, f"Gateway {gateway_id} answered {response.status_code}: {detail}")
    try:
        return PredictionsOut.model_validate(response.json())
    except (ValueError, ValidationError):
        raise HTTPException(502, f"Gateway {gateway_id} answered something that is not predictions.") from None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:1000] if detail is not None else response.text[:300]


# ----------------------------------------------------------------------------------------- keys


@keys_router.get(WELL_KNOWN_PATH, summary="Public keys that verify model bundles", response_model=ModelKeysOut)
async def model_keys(request: Request) -> dict[str, Any]:
    """The management server's model-signing public keys (JWKS form); gateways verify every bundle with them."""
    keys: dict[str, Any] = _registry(request).signing_keys.jwks()
    return keys
