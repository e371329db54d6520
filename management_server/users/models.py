"""Users of the management server."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, DateTime, Enum, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from management_server.db import Base, TimestampMixin


class Role(StrEnum):
    user = "user"
    admin = "admin"
    service = "service"


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Stored lower-cased; the unique index makes emails case-insensitively unique.
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", native_enum=False, length=16, validate_strings=True),
        nullable=False,
        default=Role.user,
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Bumped to invalidate every access token (logout, password change, disabling) or every
    # personal access token (password change, disabling) of the user at once.
    access_token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    pat_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
