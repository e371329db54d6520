"""Which bots a session's transaction changed, for whoever announces it once the transaction commits (the
dashboard's live feed: ``dashboard/live.py``).

Changes made through the ORM are noticed at each flush (SQLAlchemy's ``after_flush``); a writer that changes bot
rows with a statement of its own (``lifecycle.act``'s one-statement write, the reconciler's marks) says so with
``note``. Only sessions whose ``info`` has ``TRACKED`` set (``dashboard.live.track``) keep the list.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from management_server.bots.models import Bot

TRACKED = "freqfleet.bots_tracked"  # in a sessionmaker's info: its sessions keep the list
_CHANGED = "freqfleet.bots_changed"


def note(session: AsyncSession | Session, bots: Mapping[uuid.UUID, uuid.UUID]) -> None:
    """``bots`` (bot id -> owner id) are changed by the session's transaction."""
    info = session.info
    if TRACKED in info and bots:
        info.setdefault(_CHANGED, {}).update(bots)


def take(session: Session) -> dict[uuid.UUID, uuid.UUID] | None:
    """The bots the transaction that just committed changed (and forget them)."""
    changed: dict[uuid.UUID, uuid.UUID] | None = session.info.pop(_CHANGED, None)
    return changed


@event.listens_for(Session, "after_flush")
def _note_flushed(session: Session, _: Any) -> None:
    if TRACKED not in session.info:
        return
    note(session, {obj.id: obj.owner_id for obj in (*session.new, *session.dirty, *session.deleted) if _is_bot(obj)})


def _is_bot(obj: object) -> bool:
    return isinstance(obj, Bot) and obj.id is not None


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_CHANGED, None)
