"""What gateways report about models, applied to bots and their model history.

- MODEL_LOADED: the bot predicts with the model. Its pending deployment of that model becomes ``loaded``
  (a bot that started with its model, without a pending deployment, gets a ``start`` entry); the bot's
  ``model_loaded_id`` is that model, and its ``model_state`` is ``loaded`` when it is the model it should run.
- MODEL_REJECTED: the gateway or the bot refused the model (the reason says why); the bot kept the model it
  had. The deployment becomes ``rejected``; the bot's ``model_id`` goes back to the model it still runs, so
  its next start carries a good one, and ``last_error`` says what happened.
- COMMAND_REJECTED of an UPDATE_MODEL / ROLLBACK_MODEL: the same, found by the command's id.

Effects are set, not toggled, and keyed by (bot, model) or the command id: a redelivered event changes
nothing more.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from management_server.bots.models import Bot
from management_server.freqai.deploy import history
from management_server.freqai.models import BotModelDeployment, DeploymentAction, DeploymentState, ModelVersion
from shared.bus.messages import CommandRejected, Envelope, ModelLoaded, ModelRejected
from shared.logging import get_logger

log = get_logger(__name__)

MODEL_COMMANDS = ("UPDATE_MODEL", "ROLLBACK_MODEL")


async def _pending(session: AsyncSession, bot_id: uuid.UUID, model_id: uuid.UUID) -> BotModelDeployment | None:
    return await session.scalar(
        select(BotModelDeployment)
        .where(
            BotModelDeployment.bot_id == bot_id,
            BotModelDeployment.model_id == model_id,
            BotModelDeployment.state == DeploymentState.pending.value,
        )
        .order_by(BotModelDeployment.id.desc())
        .limit(1)
        .with_for_update()
    )


async def _start_entry(session: AsyncSession, bot: Bot, model_id: uuid.UUID, state: DeploymentState) -> None:
    """Record that the bot started with ``model_id`` (it keeps the place in history of its last deployment)."""
    latest = next((d for d in await history(session, bot.id, 20) if d.model_id == model_id), None)
    if latest is not None and latest.state == state and latest.action == DeploymentAction.start:
        return  # the same start reported again
    now = datetime.now(UTC)
    session.add(
        BotModelDeployment(
            bot_id=bot.id,
            model_id=model_id,
            previous_model_id=latest.previous_model_id if latest is not None else None,
            action=DeploymentAction.start.value,
            state=state.value,
            command_type="START_BOT",
            requested_at=now,
            reported_at=now,
        )
    )


async def apply(session: AsyncSession, message: Envelope) -> str | None:
    """Apply a model event (other events are ignored); ``loaded`` or ``rejected`` when it changed something (for
    ``freqfleet_model_deploys_total``, counted by the caller once the transaction committed)."""
    if isinstance(message, ModelLoaded):
        return await _loaded(session, message)
    if isinstance(message, ModelRejected):
        return await _rejected(session, message.data.bot_id, message.data.model_id, message.data.reason, None)
    if isinstance(message, CommandRejected) and message.data.command_type in MODEL_COMMANDS:
        if message.data.bot_id is None:
            return None
        deployment = await session.scalar(
            select(BotModelDeployment).where(BotModelDeployment.command_id == message.data.command_id)
        )
        if deployment is None:
            return None
        return await _rejected(session, message.data.bot_id, deployment.model_id, message.data.reason, deployment)
    return None


async def _loaded(session: AsyncSession, message: ModelLoaded) -> str | None:
    data = message.data
    bot = await session.get(Bot, data.bot_id, with_for_update=True)
    if bot is None:
        log.info("model event for an unknown bot", bot_id=str(data.bot_id), message_type=message.type)
        return None
    model = await session.get(ModelVersion, data.model_id)
    if model is not None and model.sha256 is not None and model.sha256 != data.sha256:
        log.warning(
            "a gateway reports a model loaded with another sha256 than the registry's",
            bot_id=str(bot.id),
            model_id=str(data.model_id),
        )
    deployment = await _pending(session, bot.id, data.model_id)
    if deployment is not None:
        deployment.state = DeploymentState.loaded.value
        deployment.reported_at = message.occurred_at
        deployment.load_seconds = data.load_seconds
    elif bot.model_loaded_id != data.model_id or bot.model_state != DeploymentState.loaded:
        await _start_entry(session, bot, data.model_id, DeploymentState.loaded)
    else:
        return None  # reported already
    bot.model_loaded_id = data.model_id
    if bot.model_id == data.model_id:
        bot.model_state = DeploymentState.loaded.value
        if bot.last_error is not None and bot.last_error.startswith("model "):
            bot.last_error = None
    log.info("model loaded", bot_id=str(bot.id), model_id=str(data.model_id), load_seconds=data.load_seconds)
    return DeploymentState.loaded.value


async def _rejected(
    session: AsyncSession,
    bot_id: uuid.UUID,
    model_id: uuid.UUID,
    reason: str,
    deployment: BotModelDeployment | None,
) -> str | None:
    bot = await session.get(Bot, bot_id, with_for_update=True)
    if bot is None:
        log.info("model event for an unknown bot", bot_id=str(bot_id))
        return None
    if deployment is None:
        deployment = await _pending(session, bot_id, model_id)
    if deployment is not None:
        if deployment.state == DeploymentState.rejected:
            return None
        deployment.state = DeploymentState.rejected.value
        deployment.reported_at = datetime.now(UTC)
        deployment.reason = reason[:2000]
    elif bot.model_id == model_id and bot.model_state != DeploymentState.rejected:
        await _start_entry(session, bot, model_id, DeploymentState.rejected)
    else:
        return None  # a report on a deployment settled already
    model = await session.get(ModelVersion, model_id)
    name = f"model {model.name!r} version {model.version}" if model is not None else f"model {model_id}"
    if bot.model_id == model_id:
        bot.model_state = DeploymentState.rejected.value
        if bot.model_loaded_id is not None and bot.model_loaded_id != model_id:
            bot.model_id = bot.model_loaded_id  # it still predicts with that one: its next start carries it
    bot.last_error = f"{name} refused: {reason}"[:2000]
    log.warning("model rejected", bot_id=str(bot.id), model_id=str(model_id), reason=reason[:300])
    return DeploymentState.rejected.value
