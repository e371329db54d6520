"""Sending models to bots: deploy, rollback, and the model a FreqAI bot's START_BOT carries.

**Transfer.** The registry decrypts a version's bundle (compressed) from the store and signs it with the
newest model-signing key (model id, version, sha256, size). Up to ``FREQFLEET_MODEL_INLINE_MAX_BYTES``
compressed it travels inline in the command (``content_b64``); above, the decrypted bytes go to Redis in
1 MiB chunks (:func:`shared.freqai.transfer.publish_chunks`, a day's TTL) and the command names the transfer.
Memory stays at about one chunk; nothing decrypted touches the disk.

**Deploy** (``POST /bots/{id}/model``) records a deployment in the bot's history and sets ``model_id``; a
running bot gets UPDATE_MODEL through the outbox (its generation bumped, like every command), a stopped bot
gets the model with its next START_BOT. **Rollback** goes back to the model the current one replaced: a
running bot gets ROLLBACK_MODEL (the gateway reinstalls it from its own store, no transfer) when it had
loaded that version before, else UPDATE_MODEL with the bundle. Repeated rollbacks walk back the history.
The gateway's MODEL_LOADED / MODEL_REJECTED (``events.py``) then settle the deployment.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import Bot, DesiredState
from management_server.bus.service import enqueue
from management_server.freqai.models import BotModelDeployment, DeploymentAction, DeploymentState, ModelVersion
from management_server.freqai.service import ModelRefused, describe, fit_problem
from management_server.freqai.signing import sign
from management_server.freqai.store import ModelStore, StoreError
from management_server.gateways.service import LIVE_WINDOW, is_live
from management_server.security.keys import KeyRing
from management_server.strategies.models import Strategy
from shared.bus.messages import (
    Envelope,
    ModelBundle,
    RollbackModel,
    RollbackModelData,
    UpdateModel,
    UpdateModelData,
)
from shared.bus.streams import commands_stream
from shared.freqai.transfer import ChunkStore, publish_chunks

SOURCE = "management"
Transfer = Literal["inline", "chunked", "cached"]


@dataclass
class ModelRegistry:
    """What sending a model needs: the store, the signing keys, Redis for chunks, the inline threshold."""

    store: ModelStore
    signing_keys: KeyRing
    redis: ChunkStore
    inline_max: int

    async def bundle(self, model: ModelVersion) -> tuple[ModelBundle, Transfer]:
        """The signed ``ModelBundle`` of a registered version (its chunks stored in Redis when it is large).

        :raises ModelRefused: the version has no bundle, or the stored bundle can't be read (409).
        """
        if model.sha256 is None or model.size is None or model.compressed_size is None:
            raise ModelRefused(409, f"{describe(model)} has no bundle: it is {model.status}")
        signature = sign(
            self.signing_keys, model_id=model.id, version=model.version, sha256=model.sha256, size=model.size
        )
        common = {
            "model_id": model.id,
            "version": model.version,
            "filename": f"model-{model.id}-v{model.version}.tar.zst",
            "compression": "zstd",
            "sha256": model.sha256,
            "size": model.size,
            "signature": signature,
        }
        try:
            if model.compressed_size <= self.inline_max:
                content = await asyncio.to_thread(self._inline, model.id)
                return ModelBundle(**common, content_b64=content), "inline"
            transfer_id = uuid.uuid4()
            with self.store.reader(model.id) as reader:
                count = await publish_chunks(self.redis, transfer_id, reader)
        except StoreError as exc:
            raise ModelRefused(409, f"{describe(model)} can't be sent: {exc}") from None
        return ModelBundle(**common, transfer_id=transfer_id, chunk_count=count), "chunked"

    def _inline(self, model_id: uuid.UUID) -> str:
        return base64.b64encode(b"".join(self.store.segments(model_id))).decode()


@dataclass(frozen=True)
class DeployResult:
    bot: Bot
    deployment: BotModelDeployment
    command: Envelope | None
    notice: str | None


def _running(bot: Bot) -> bool:
    return bot.desired_state in (DesiredState.running, DesiredState.paused) and bot.gateway_id is not None


async def history(session: AsyncSession, bot_id: uuid.UUID, limit: int = 100) -> list[BotModelDeployment]:
    """The bot's deployments, newest first."""
    rows = await session.execute(
        select(BotModelDeployment)
        .where(BotModelDeployment.bot_id == bot_id)
        .order_by(BotModelDeployment.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


async def _current(session: AsyncSession, bot: Bot) -> BotModelDeployment | None:
    """The deployment that put the bot's ``model_id`` there (None: it came with the bot)."""
    if bot.model_id is None:
        return None
    return await session.scalar(
        select(BotModelDeployment)
        .where(
            BotModelDeployment.bot_id == bot.id,
            BotModelDeployment.model_id == bot.model_id,
            BotModelDeployment.state != DeploymentState.rejected.value,
        )
        .order_by(BotModelDeployment.id.desc())
        .limit(1)
    )


async def _check_fits(session: AsyncSession, bot: Bot, model: ModelVersion) -> None:
    strategy = await session.get(Strategy, bot.strategy_id)
    problem = fit_problem(
        model,
        timeframe=bot.timeframe,
        pairs=list(bot.pairs),
        strategy_class=strategy.class_name if strategy is not None else None,
    )
    if problem is not None:
        raise ModelRefused(409, f"This model can't serve the bot: {problem}.")


async def _notice(session: AsyncSession, gateway_id: str) -> str | None:
    if await is_live(session, gateway_id):
        return None
    return (
        f"Gateway {gateway_id} has not reported for over {int(LIVE_WINDOW.total_seconds())} s: "
        "the command is queued and runs when it is back."
    )


async def _record(
    session: AsyncSession,
    registry: ModelRegistry,
    bot: Bot,
    model: ModelVersion,
    *,
    action: DeploymentAction,
    previous_model_id: uuid.UUID | None,
    user_id: uuid.UUID | None,
    cached: bool,
) -> DeployResult:
    """Send (or schedule) ``model`` for ``bot`` and record it in the bot's history (the caller commits)."""
    now = datetime.now(UTC)
    # Anything still pending for this bot will never be reported as the current model: superseded.
    await session.execute(
        update(BotModelDeployment)
        .where(BotModelDeployment.bot_id == bot.id, BotModelDeployment.state == DeploymentState.pending.value)
        .values(state=DeploymentState.superseded.value, reported_at=now)
    )
    deployment = BotModelDeployment(
        bot_id=bot.id,
        model_id=model.id,
        previous_model_id=previous_model_id,
        action=action.value,
        state=DeploymentState.pending.value,
        requested_by=user_id,
        requested_at=now,
    )
    command: Envelope | None = None
    notice = None
    if _running(bot):
        assert bot.gateway_id is not None
        bot.generation += 1
        if cached:
            command = RollbackModel(
                source=SOURCE, data=RollbackModelData(bot_id=bot.id, generation=bot.generation, model_id=model.id)
            )
            deployment.transfer = "cached"
        else:
            bundle, transfer = await registry.bundle(model)
            command = UpdateModel(
                source=SOURCE, data=UpdateModelData(bot_id=bot.id, generation=bot.generation, model=bundle)
            )
            deployment.transfer = transfer
        await enqueue(session, commands_stream(bot.gateway_id), command)
        deployment.command_id = command.event_id
        deployment.command_type = command.type
        deployment.generation = bot.generation
        notice = await _notice(session, bot.gateway_id)
    bot.model_id = model.id
    bot.model_state = DeploymentState.pending.value
    bot.updated_at = now
    session.add(deployment)
    await session.flush()
    return DeployResult(bot, deployment, command, notice)


async def deploy(
    session: AsyncSession, registry: ModelRegistry, bot: Bot, model: ModelVersion, user_id: uuid.UUID | None
) -> DeployResult:
    """Deploy ``model`` to ``bot`` (its row locked by the caller).

    :raises ModelRefused: the model does not fit the bot, or the bot already predicts with it (409).
    """
    await _check_fits(session, bot, model)
    current = await _current(session, bot)
    if bot.model_id == model.id:
        if bot.model_state == DeploymentState.loaded and bot.model_loaded_id == model.id:
            raise ModelRefused(409, f"The bot already predicts with {describe(model)}.")
        previous = current.previous_model_id if current is not None else None  # sent again: same place in history
    else:
        previous = bot.model_id
    return await _record(
        session,
        registry,
        bot,
        model,
        action=DeploymentAction.deploy,
        previous_model_id=previous,
        user_id=user_id,
        cached=False,
    )


async def rollback(session: AsyncSession, registry: ModelRegistry, bot: Bot, user_id: uuid.UUID | None) -> DeployResult:
    """Go back to the model the bot's current one replaced (its row locked by the caller).

    :raises ModelRefused: nothing to go back to, or that version is gone or no longer fits (409).
    """
    current = await _current(session, bot)
    if bot.model_id is None or current is None or current.previous_model_id is None:
        raise ModelRefused(409, "The bot has no earlier model to go back to (deploy one with POST .../model).")
    target = await session.get(ModelVersion, current.previous_model_id)
    if target is None:
        raise ModelRefused(409, f"The bot's previous model {current.previous_model_id} is no longer in the registry.")
    await _check_fits(session, bot, target)
    # Its own place in history: what the target replaced when it was deployed (repeated rollbacks walk back).
    earlier = await session.scalar(
        select(BotModelDeployment)
        .where(
            BotModelDeployment.bot_id == bot.id,
            BotModelDeployment.model_id == target.id,
            BotModelDeployment.id < current.id,
            BotModelDeployment.state != DeploymentState.rejected.value,
        )
        .order_by(BotModelDeployment.id.desc())
        .limit(1)
    )
    # The gateway keeps the versions a bot ran in its own store: one the bot reported loaded needs no transfer.
    ran_here = await session.scalar(
        select(BotModelDeployment.id)
        .where(
            BotModelDeployment.bot_id == bot.id,
            BotModelDeployment.model_id == target.id,
            BotModelDeployment.state == DeploymentState.loaded.value,
        )
        .limit(1)
    )
    return await _record(
        session,
        registry,
        bot,
        target,
        action=DeploymentAction.rollback,
        previous_model_id=earlier.previous_model_id if earlier is not None else None,
        user_id=user_id,
        cached=ran_here is not None,
    )


async def start_bundle(session: AsyncSession, registry: ModelRegistry, bot: Bot) -> ModelBundle | None:
    """The model a START_BOT of ``bot`` carries (None: the bot has no model); marks its model state pending.

    :raises ModelRefused: the bot's model is gone, no longer fits, or its bundle can't be read (409).
    """
    if bot.model_id is None:
        return None
    model = await session.get(ModelVersion, bot.model_id)
    if model is None:
        raise ModelRefused(409, f"The bot's model {bot.model_id} is no longer in the registry: deploy another one.")
    await _check_fits(session, bot, model)
    bundle, _ = await registry.bundle(model)
    if bot.model_loaded_id != model.id:
        bot.model_state = DeploymentState.pending.value
    return bundle
