"""Moving a bot to another gateway: what failover (``failover.py``) and drain (``drain.py``) share.

Both are :class:`Mover`\\ s (periodic work of the management server, one replica at a time by their own advisory
lock) and both end a move with :func:`start_elsewhere`: a new password for the bot's database role with every session
of the old one ended (whoever ran the bot before can't write its trades any more), then a START_BOT to the target at
the next generation (the spec sealed to that gateway, with the new password; its relay names it the holder first),
and a PAUSE_BOT after it for a bot that was paused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from management_server.audit.service import AuditLog
from management_server.botdb import service as botdb
from management_server.botdb.service import Provisioner
from management_server.bots.lifecycle import Action, ActionResult, act
from management_server.bots.models import Bot
from management_server.config import ManagementSettings
from management_server.freqai.deploy import ModelRegistry, start_bundle
from management_server.periodic import Periodic
from management_server.security.crypto import MasterKeys


class Mover(Periodic):
    def __init__(
        self,
        settings: ManagementSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: MasterKeys,
        audit: AuditLog,
        provisioner: Provisioner | None,
        registry: ModelRegistry | None = None,
        on_commands: Callable[[], None] | None = None,
        redis: Any = None,
    ) -> None:
        super().__init__(settings.failover_interval)
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.keys = keys
        self.audit = audit
        self.provisioner = provisioner
        self.registry = registry
        self.on_commands = on_commands  # called after a round that enqueued commands (wakes the outbox relay)
        self.redis = redis

    async def start_elsewhere(
        self, session: AsyncSession, bot: Bot, target: str, *, paused: bool
    ) -> tuple[ActionResult, int]:
        """Fence the bot's database, start it on ``target`` (paused again if it was); the start, and how many
        database sessions of the old holder were ended.

        :raises BotDatabaseRefused, ActionRefused, ModelRefused: nothing was sent.
        """
        stored = await botdb.of(session, bot.id)
        ended = 0
        if stored is not None and self.provisioner is not None:
            ended = await botdb.rotate(self.keys, self.provisioner, stored)
        bundle = None if self.registry is None else await start_bundle(session, self.registry, bot)
        result = await act(session, bot, Action.start, self.keys, freqai_model=bundle, place_on=target)
        if paused:  # started, then paused at once: as it was (the reconciler does the same)
            await act(session, bot, Action.pause, self.keys)
        return result, ended
