"""Reconcile: what runs converges to what should, by itself.

Level-based, not edge-based: a lost command, a gateway killed mid-stop, a restored backup or a gateway restarted
on an empty folder all leave the same trace, a bot whose gateway says something other than its desired state, and
one pass handles them alike. Every ``reconcile_interval`` seconds (one replica at a time: a PostgreSQL advisory
lock), for each enrolled gateway whose heartbeat is fresh and carries its inventory (every bot it has, with the
generation of the last command it applied, its desired and actual state):

- a bot the gateway reports at the bot's current generation: its ``actual_state`` is what the gateway says;
- otherwise, once the bot's last command is older than ``reconcile_grace`` (it had time to arrive):
  - it should run (or be paused) and the gateway does not run it: START_BOT again (and PAUSE_BOT for a paused
    one), with a backoff that doubles from ``reconcile_grace`` up to 10 minutes while it keeps not running;
  - it should be stopped (or halted) and the gateway runs it: STOP_BOT again, with the same backoff;
  - either way its ``actual_state`` becomes what the gateway says (``stopped`` when the gateway has no such bot);
  - a bot the gateway gave up on (``failed``: a crash loop) is left failed for a person to look at;
- a bot the gateway runs that is not placed there (moved, deleted): STOP_BOT to that gateway.

Bots of a gateway silent for over ``reconcile_stale_after`` read ``unknown`` (not what they said last), and after
``reconcile_lost_after`` ``lost``; its next inventory sets them right. Commands are audited (actor
``freqfleet:reconcile``, via ``reconcile``); state corrections are logged.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.audit.models import Outcome
from management_server.audit.service import Actor, AuditLog
from management_server.bots import changes
from management_server.bots.lifecycle import SOURCE, Action, ActionRefused, act
from management_server.bots.models import ActualState, Bot, DesiredState
from management_server.bus.service import enqueue
from management_server.config import ManagementSettings
from management_server.freqai.deploy import ModelRegistry, start_bundle
from management_server.freqai.service import ModelRefused
from management_server.gateways.models import Gateway
from management_server.periodic import Periodic
from management_server.security.crypto import MasterKeys
from shared.bus.messages import StopBot, StopBotData
from shared.bus.streams import commands_stream
from shared.logging import get_logger

log = get_logger(__name__)

ACTOR = Actor(None, "freqfleet:reconcile")
LOCK_KEY = 0x46726571_52656331  # "FreqRec1": one reconcile pass at a time over all replicas
MAX_BACKOFF = 600.0
RUNS = frozenset({"running", "paused", "starting"})
# States that claim a process somewhere: only a fresh report may keep saying them.
CLAIMS = (ActualState.running, ActualState.paused, ActualState.starting, ActualState.stopping)


@dataclass(frozen=True)
class Correction:
    """One thing a pass did: a command sent (``start``, ``pause``, ``stop``) or refused, or a state set right."""

    bot_id: uuid.UUID | None
    gateway_id: str
    action: str
    detail: str
    outcome: Outcome = Outcome.requested
    command_id: uuid.UUID | None = None

    @property
    def command(self) -> bool:
        return self.action != "state"


class Reconciler(Periodic):
    name = "reconcile"

    def __init__(
        self,
        settings: ManagementSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: MasterKeys,
        audit: AuditLog,
        registry: ModelRegistry | None = None,
        on_commands: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(settings.reconcile_interval)
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.keys = keys
        self.audit = audit
        self.registry = registry
        self.on_commands = on_commands  # called after a pass that enqueued commands (wakes the outbox relay)
        self._started = time.monotonic()

    async def tick(self) -> None:
        # Silence is judged only once this process could have heard every gateway (after a restart, their
        # heartbeats may still wait on the stream).
        judge = time.monotonic() - self._started >= self.settings.reconcile_stale_after
        await self.pass_once(judge_silence=judge)

    async def pass_once(self, now: datetime | None = None, *, judge_silence: bool = True) -> list[Correction]:
        """One pass over every gateway; what it did."""
        now = now or datetime.now(UTC)
        async with self.sessionmaker.begin() as session:
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
                return []  # another replica is at it
            corrections = await self._unreported(session, now) if judge_silence else []
            fresh = now - timedelta(seconds=self.settings.reconcile_stale_after)
            gateways = await session.execute(
                select(Gateway).where(
                    Gateway.signing_key.is_not(None),
                    Gateway.revoked_at.is_(None),
                    Gateway.inventory.is_not(None),
                    Gateway.inventory_at >= fresh,
                )
            )
            for gateway in gateways.scalars():
                corrections += await self._gateway(session, gateway, now)
            for c in corrections:
                log.info(
                    "reconciled",
                    bot_id=None if c.bot_id is None else str(c.bot_id),
                    gateway_id=c.gateway_id,
                    action=c.action,
                    detail=c.detail,
                )
                if c.command:  # with the commands, so the gateways' answers always find their rows
                    self.audit.add(
                        session,
                        f"bot.{c.action}",
                        c.outcome,
                        ACTOR,
                        target_type="bot",
                        target_id=c.bot_id,
                        reason=c.detail,
                        via="reconcile",
                        details={"gateway_id": c.gateway_id},
                        command_id=c.command_id,
                    )
        if self.on_commands is not None and any(c.command_id is not None for c in corrections):
            self.on_commands()
        return corrections

    # -- gateways not heard from ------------------------------------------------------------------

    async def _unreported(self, session: AsyncSession, now: datetime) -> list[Correction]:
        """Bots of silent gateways stop claiming anything: ``unknown``, then ``lost``."""
        corrections: list[Correction] = []
        for state, silent_for, claims in (
            (ActualState.lost, self.settings.reconcile_lost_after, (*CLAIMS, ActualState.unknown)),
            (ActualState.unknown, self.settings.reconcile_stale_after, CLAIMS),
        ):
            since = now - timedelta(seconds=silent_for)
            silent = select(Gateway.gateway_id).where(
                Gateway.revoked_at.is_(None), (Gateway.last_seen_at.is_(None)) | (Gateway.last_seen_at < since)
            )
            changed = await session.execute(
                update(Bot)
                .where(Bot.gateway_id.in_(silent), Bot.actual_state.in_([c.value for c in claims]))
                .values(actual_state=state.value)
                .returning(Bot.id, Bot.gateway_id, Bot.owner_id)
            )
            marked = changed.all()
            changes.note(session, {bot_id: owner_id for bot_id, _, owner_id in marked})  # the dashboard's pages
            for bot_id, gateway_id, _ in marked:
                detail = f"its gateway has not reported for over {silent_for:g} s"
                corrections.append(Correction(bot_id, gateway_id or "", "state", f"{state.value}: {detail}"))
        return corrections

    # -- one gateway's inventory ------------------------------------------------------------------

    async def _gateway(self, session: AsyncSession, gateway: Gateway, now: datetime) -> list[Correction]:
        assert gateway.inventory is not None
        reported: dict[uuid.UUID, dict[str, Any]] = {}
        for item in gateway.inventory:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                reported[uuid.UUID(str(item["bot_id"]))] = item
        placed = set((await session.execute(select(Bot.id).where(Bot.gateway_id == gateway.gateway_id))).scalars())
        # A bot locked by a request in progress is left for the next pass (and is not taken for a stranger).
        bots = await session.execute(
            select(Bot).where(Bot.gateway_id == gateway.gateway_id).with_for_update(skip_locked=True)
        )
        corrections: list[Correction] = []
        for bot in bots.scalars():
            corrections += await self._bot(session, gateway, bot, reported.get(bot.id), now)
        for bot_id in placed:
            reported.pop(bot_id, None)
        for bot_id, left in reported.items():  # bots it has that are not placed there
            if left.get("desired") in ("running", "paused"):
                generation = int(left.get("generation", 0)) + 1
                command = StopBot(source=SOURCE, data=StopBotData(bot_id=bot_id, generation=generation))
                await enqueue(session, commands_stream(gateway.gateway_id), command)
                detail = "its gateway runs it and it is not placed there"
                corrections.append(Correction(bot_id, gateway.gateway_id, "stop", detail, command_id=command.event_id))
        return corrections

    async def _bot(
        self, session: AsyncSession, gateway: Gateway, bot: Bot, entry: dict[str, Any] | None, now: datetime
    ) -> list[Correction]:
        assert gateway.inventory_at is not None
        gid = gateway.gateway_id
        said = None if entry is None else str(entry.get("actual"))
        grace = timedelta(seconds=self.settings.reconcile_grace)
        recent = bot.commanded_at is not None and gateway.inventory_at - bot.commanded_at < grace
        if recent and bot.desired_state == DesiredState.halted and said in RUNS:
            # An emergency stop under way: the bot still runs while its trades are exited (a report from those
            # seconds would put a halted bot back to paused); the reports that follow it tell.
            return []
        if entry is not None and int(entry.get("generation", -1)) >= bot.generation:
            if not entry.get("settled", True):
                return []  # it has the bot's last command and has not acted on it yet: its state is from before
            # The gateway applied the bot's last command: what it says is the bot's state.
            if said in RUNS:
                bot.reconcile_attempts = 0
            return self._truth(bot, gid, said)
        if recent:
            return []  # its last command may still be on its way
        desired = DesiredState(bot.desired_state)
        should_run = desired in (DesiredState.running, DesiredState.paused)
        if said == "failed":
            return self._truth(bot, gid, said)  # the gateway's restart policy gave up: a person looks at it
        if should_run and said in RUNS and entry is not None and entry.get("desired") == desired.value:
            return self._truth(bot, gid, said)  # it does what it should; a later command (a live edit) was lost
        found = self._truth(bot, gid, said or "stopped")
        if not should_run and said not in RUNS:
            return found  # stopped, as it should be
        # It runs and should not; it should run and does not; or it runs paused/unpaused the other way round.
        return [*found, *await self._command(session, bot, gid, desired, now)]

    def _truth(self, bot: Bot, gateway_id: str, said: str | None) -> list[Correction]:
        if said is None or said not in ActualState.__members__:
            return []
        state = said
        if state == "stopped" and bot.desired_state == DesiredState.halted:
            state = ActualState.halted.value
        if bot.actual_state == state:
            return []
        before, bot.actual_state = bot.actual_state, state
        return [Correction(bot.id, gateway_id, "state", f"{before} -> {state}, as its gateway reports")]

    def _due(self, bot: Bot, now: datetime) -> bool:
        """Whether the backoff lets the reconciler send this bot another command now."""
        if bot.reconciled_at is None or bot.reconcile_attempts == 0:
            return True
        wait = min(self.settings.reconcile_grace * 2 ** (bot.reconcile_attempts - 1), MAX_BACKOFF)
        return now >= bot.reconciled_at + timedelta(seconds=wait)

    async def _command(
        self, session: AsyncSession, bot: Bot, gateway_id: str, desired: DesiredState, now: datetime
    ) -> list[Correction]:
        """The command that brings the bot to ``desired`` on its gateway, if the backoff allows one now."""
        if not self._due(bot, now):
            return []
        attempt = bot.reconcile_attempts + 1
        detail = f"it should be {desired.value} and its gateway says otherwise (attempt {attempt})"
        sent: list[tuple[Action, uuid.UUID]] = []
        try:
            async with session.begin_nested():  # a refusal undoes this bot's changes only
                if desired in (DesiredState.stopped, DesiredState.halted):
                    # Not act(stop): that would make a halted bot merely stopped.
                    bot.generation += 1
                    bot.commanded_at = now
                    stop = StopBot(source=SOURCE, data=StopBotData(bot_id=bot.id, generation=bot.generation))
                    await enqueue(session, commands_stream(gateway_id), stop)
                    sent.append((Action.stop, stop.event_id))
                elif bot.actual_state in (ActualState.running, ActualState.paused, ActualState.starting):
                    action = Action.pause if desired is DesiredState.paused else Action.resume
                    sent.append((action, (await act(session, bot, action, self.keys)).command.event_id))
                else:
                    bundle = await start_bundle(session, self.registry, bot) if self.registry else None
                    started = await act(session, bot, Action.start, self.keys, freqai_model=bundle)
                    sent.append((Action.start, started.command.event_id))
                    if desired is DesiredState.paused:  # started, then paused at once: as it was
                        sent.append((Action.pause, (await act(session, bot, Action.pause, self.keys)).command.event_id))
        except (ActionRefused, ModelRefused) as exc:
            await session.refresh(bot)  # act() writes with a statement of its own: read what the rollback left
            bot.last_error = f"Freqfleet could not bring the bot back to {desired.value}: {exc}"
            done = [Correction(bot.id, gateway_id, "start", str(exc), Outcome.failure)]
        else:
            done = [Correction(bot.id, gateway_id, a.value, detail, command_id=c) for a, c in sent]
        bot.reconcile_attempts, bot.reconciled_at = attempt, now  # after act(), which resets them for a person
        return done
