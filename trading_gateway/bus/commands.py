"""The gateway's handler of ``freqfleet:commands:{gateway_id}``: every command answered, none applied twice.

Each command gets COMMAND_ACCEPTED or COMMAND_REJECTED (with a reason a person can act on), never
silence; the answer's ``event_id`` is derived from the command's, so a command delivered again (a
crash between the effect and the ack) answers with the same id and the management server sees one
answer. What happens next is reported by the fleet's own events (BOT_STARTED, BOT_STOPPED,
BOT_STATUS, BOT_FAILED, EMERGENCY_STOP_COMPLETED, MODEL_LOADED). A FreqAI model that is refused (START_BOT
with ``freqai_model``, UPDATE_MODEL) gets MODEL_REJECTED with the reason besides COMMAND_REJECTED.

Generations:

- Commands that set a bot's desired state (START, STOP, RESTART, PAUSE, RESUME, UPDATE_CONFIG) or its
  model (UPDATE_MODEL, ROLLBACK_MODEL) apply only if their generation is at least the newest one seen
  for the bot, in the gateway's Redis (:class:`~shared.bus.generations.GenerationTracker`, atomic) and
  in its state file (which survives a Redis that lost its data). An older one is answered
  COMMAND_REJECTED ("stale"), not applied.
- FORCE_EXIT sets no desired state (the management server does not bump the generation for it):
  it is applied whatever its generation, and records none.
- EMERGENCY_STOP carries a generation per bot in ``bots``. It is never skipped: stopping is always
  safe, and a kill switch that a generation race could swallow is not one. Its generations are
  recorded (they only move forward) after the bots are stopped, so older commands still in flight
  cannot start them again.

A handler error leaves the entry pending (the consumer retries it); on the last delivery before the
dead-letter stream, COMMAND_REJECTED says so.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from shared.bus.consumer import Delivery
from shared.bus.generations import GenerationTracker
from shared.bus.messages import (
    BotCommand,
    CommandAccepted,
    CommandAcceptedData,
    CommandRejected,
    CommandRejectedData,
    EmergencyScope,
    EmergencyStop,
    Envelope,
    ForceExit,
    MigrateTradeDb,
    PauseBot,
    RestartBot,
    ResumeBot,
    RollbackModel,
    StartBot,
    StopBot,
    UpdateConfig,
    UpdateModel,
    decode,
    encode,
)
from shared.logging import get_logger
from trading_gateway.bus.events import EventPublisher
from trading_gateway.fleet.bot import CommandRefused, describe_error
from trading_gateway.fleet.service import Fleet
from trading_gateway.fleet.trade_db import migrate_trade_db
from trading_gateway.freqai.service import Deployment, ModelRefused

log = get_logger(__name__)

ANSWERS = uuid.UUID("a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d")  # namespace of the answers' ids


def answer_id(command_id: uuid.UUID, kind: str) -> uuid.UUID:
    return uuid.uuid5(ANSWERS, f"{command_id}:{kind}")


class Answers(Protocol):
    """Where each applied command's answer is kept (``trading_gateway/bus/applied.py``)."""

    async def remember(self, event_id: uuid.UUID, answer: str) -> None: ...

    async def recall(self, event_id: uuid.UUID) -> str | None: ...


class CommandHandler:
    def __init__(
        self,
        fleet: Fleet,
        events: EventPublisher,
        tracker: GenerationTracker,
        *,
        max_deliveries: int = 5,
        answers: Answers | None = None,
    ) -> None:
        self.fleet = fleet
        self.events = events
        self.tracker = tracker
        self.max_deliveries = max_deliveries
        self.answers = answers  # each command's answer, kept with its "applied" mark: a redelivery gets it again
        self.source = fleet.source
        self.handlers: dict[str, Callable[[Any], Awaitable[dict[str, int] | None]]] = {
            "START_BOT": self.on_start,
            "STOP_BOT": self.on_stop,
            "RESTART_BOT": self.on_restart,
            "PAUSE_BOT": self.on_pause_or_resume,
            "RESUME_BOT": self.on_pause_or_resume,
            "FORCE_EXIT": self.on_force_exit,
            "UPDATE_CONFIG": self.on_update_config,
            "UPDATE_MODEL": self.on_update_model,
            "ROLLBACK_MODEL": self.on_rollback_model,
            "MIGRATE_TRADE_DB": self.on_migrate_trade_db,
        }

    async def __call__(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            await self.handle(message)
        except Exception as exc:
            if delivery.deliveries >= self.max_deliveries:
                await self._reject(
                    message,
                    f"the gateway failed to apply it {delivery.deliveries} times (last error: "
                    f"{type(exc).__name__}: {describe_error(exc)}); it goes to the dead-letter stream, from where it "
                    "can be replayed",
                )
            raise

    async def handle(self, message: Envelope) -> None:
        if isinstance(message, EmergencyStop):
            await self._emergency_stop(message)
            return
        data = message.data
        if not isinstance(data, BotCommand):
            await self._reject(message, f"{message.type} is not a command a gateway handles")
            return
        if not isinstance(message, ForceExit) and (why := await self._stale(data)) is not None:
            log.info("stale command ignored", bot_id=str(data.bot_id), generation=data.generation, reason=why)
            await self._reject(message, why)
            return
        handler = self.handlers.get(message.type)
        try:
            if handler is None:
                raise CommandRefused(f"{message.type} is not supported by this gateway version")
            result = await handler(message)
        except (CommandRefused, ModelRefused) as exc:
            log.info("command rejected", bot_id=str(data.bot_id), reason=str(exc))
            await self._reject(message, str(exc))
            return
        await self._accept(message, result)

    # One handler per command type (as the management server's event dispatcher has one per event type).

    async def on_start(self, message: StartBot) -> None:
        data, cid = message.data, message.correlation_id
        model = None
        if data.freqai_model is not None:  # verified and stored before anything starts
            model = await self.fleet.models.receive(data.bot_id, data.freqai_model, data.spec, correlation_id=cid)
        await self.fleet.start_bot(data.bot_id, data.generation, data.spec, correlation_id=cid, model=model)

    async def on_stop(self, message: StopBot) -> None:
        data = message.data
        known = await self.fleet.stop_bot(
            data.bot_id, data.generation, reason=data.reason, correlation_id=message.correlation_id
        )
        if not known:
            log.info("stop of a bot this gateway does not run: nothing to do", bot_id=str(data.bot_id))

    async def on_restart(self, message: RestartBot) -> None:
        data = message.data
        await self.fleet.restart_bot(data.bot_id, data.generation, correlation_id=message.correlation_id)

    async def on_pause_or_resume(self, message: PauseBot | ResumeBot) -> None:
        data, paused = message.data, isinstance(message, PauseBot)
        await self.fleet.pause_bot(data.bot_id, data.generation, paused=paused, correlation_id=message.correlation_id)

    async def on_force_exit(self, message: ForceExit) -> None:
        data = message.data
        answer = await self.fleet.force_exit(data.bot_id, data.trade_id)
        log.info("force exit", bot_id=str(data.bot_id), trade_id=data.trade_id, answer=answer)

    async def on_update_config(self, message: UpdateConfig) -> None:
        data = message.data
        await self.fleet.update_config(data.bot_id, data.generation, data.spec, correlation_id=message.correlation_id)

    async def on_update_model(self, message: UpdateModel) -> None:
        data, cid = message.data, message.correlation_id
        deployed = await self.fleet.models.update(self.fleet.bot(data.bot_id), data, correlation_id=cid)
        how = await self._deployed(deployed, data.bot_id, data.generation, cid)
        log.info("model update", bot_id=str(data.bot_id), model_id=str(data.model.model_id), how=how)

    async def on_rollback_model(self, message: RollbackModel) -> None:
        data = message.data
        deployed = await self.fleet.models.rollback(self.fleet.bot(data.bot_id), data)
        how = await self._deployed(deployed, data.bot_id, data.generation, message.correlation_id)
        log.info("model rollback", bot_id=str(data.bot_id), how=how)

    async def on_migrate_trade_db(self, message: MigrateTradeDb) -> dict[str, int]:
        data = message.data
        return await migrate_trade_db(self.fleet, data.bot_id, data.database)

    async def _deployed(
        self, deployed: Deployment, bot_id: uuid.UUID, generation: int, correlation_id: str | None
    ) -> str:
        """What a model installed for a bot leaves to the fleet: the bot's config rendered again and reloaded when
        the model changes it; then its acknowledgement watched for, and the model store collected. How it went."""
        fleet, how = self.fleet, deployed.how
        bot = fleet.bot(bot_id)
        if bot is None:  # the bot was there for the install a moment ago; nothing removes one but a restart
            raise CommandRefused(f"this gateway has no bot {bot_id}")
        if deployed.reconfigure and bot.spec is not None:
            applied = await fleet.update_config(bot_id, generation, bot.spec, correlation_id=correlation_id)
            how = f"{how}; {applied}"
        fleet.models.watch(bot, deployed.record)
        await fleet.models.collect(fleet.bots.values())
        log.info("model deployed", bot_id=str(bot_id), model_id=str(deployed.record.model_id), how=how)
        return how

    async def _stale(self, data: BotCommand) -> str | None:
        """Why the command is stale, or None when it may be applied (then its generation is recorded)."""
        local = self.fleet.generation_of(data.bot_id)
        if local is not None and data.generation < local:
            newest = local
        elif await self.tracker.accept(data.bot_id, data.generation):
            return None
        else:
            newest = await self.tracker.current(data.bot_id) or 0
        return (
            f"stale: generation {data.generation} of bot {data.bot_id} is older than generation {newest} "
            "already applied on this gateway; ignored"
        )

    async def _emergency_stop(self, message: EmergencyStop) -> None:
        data = message.data
        await self._accept(message)
        refs = [ref.bot_id for ref in data.bots]
        every = [uuid.UUID(b) for b in self.fleet.bots] if data.scope is EmergencyScope.all else []
        targets = every + refs
        await self.fleet.emergency_stop(
            targets,
            command_id=message.event_id,
            generations={ref.bot_id: ref.generation for ref in data.bots},
            requested_by=data.requested_by,
            reason=data.reason,
        )
        for ref in data.bots:  # after the stop: Redis trouble here must not delay it
            with contextlib.suppress(RedisError, OSError):
                await self.tracker.accept(ref.bot_id, ref.generation)

    async def answer_again(self, message: Envelope) -> None:
        """A command applied before, delivered again: the management server publishes a command again while it has
        no answer (the answer may be what Redis lost), so it gets the same answer again, same id; not applied
        twice."""
        if self.answers is None or (answer := await self.answers.recall(message.event_id)) is None:
            return
        await self.events.publish(decode(answer))
        log.info("command answered again", command_type=message.type, command_id=str(message.event_id))

    async def after_batch(self, messages: list[Envelope], through: str) -> None:
        """The consumer finished a batch: its answers go out now, in one round trip."""
        await self.events.flush_later()

    async def _answer(self, command: Envelope, answer: Envelope) -> None:
        self.events.publish_later(answer)  # with the batch's others, after it (or before any other event)
        if self.answers is not None:
            with contextlib.suppress(RedisError, OSError):  # then a redelivery is acked without an answer
                await self.answers.remember(command.event_id, encode(answer))

    async def _accept(self, message: Envelope, result: dict[str, int] | None = None) -> None:
        # Written under the command's correlation id (bound by the consumer), like what it makes the fleet do.
        log.info("command accepted", command_type=message.type, bot_id=str(getattr(message.data, "bot_id", None)))
        await self._answer(
            message,
            CommandAccepted(
                event_id=answer_id(message.event_id, "accepted"),
                source=self.source,
                correlation_id=message.correlation_id,
                data=CommandAcceptedData(
                    command_id=message.event_id,
                    command_type=message.type,
                    bot_id=getattr(message.data, "bot_id", None),
                    result=result,
                ),
            ),
        )

    async def _reject(self, message: Envelope, reason: str) -> None:
        await self._answer(
            message,
            CommandRejected(
                event_id=answer_id(message.event_id, "rejected"),
                source=self.source,
                correlation_id=message.correlation_id,
                data=CommandRejectedData(
                    command_id=message.event_id,
                    command_type=message.type,
                    bot_id=getattr(message.data, "bot_id", None),
                    reason=reason[:2000] or "rejected",
                ),
            ),
        )
