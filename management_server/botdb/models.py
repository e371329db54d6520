"""The PostgreSQL database (and role of the same name) that holds one bot's Freqtrade trades."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, TimestampMixin


class BotDatabase(TimestampMixin, Base):
    __tablename__ = "bot_databases"

    bot_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), nullable=False, unique=True)  # the database's and the role's
    host: Mapped[str] = mapped_column(String(255), nullable=False)  # as the gateways reach it
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)  # which master key sealed the password
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    password_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
