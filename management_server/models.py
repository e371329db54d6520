"""Every ORM model, imported in one place so Alembic and the tests see the whole schema."""

from management_server.audit.models import AuditEntry
from management_server.auth.models import PersonalAccessToken, RefreshToken
from management_server.bus.models import OutboxMessage, ProcessedEvent
from management_server.db import Base
from management_server.gateways.models import Gateway
from management_server.users.models import User

__all__ = [
    "AuditEntry",
    "Base",
    "Gateway",
    "OutboxMessage",
    "PersonalAccessToken",
    "ProcessedEvent",
    "RefreshToken",
    "User",
]
