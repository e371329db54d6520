"""Every ORM model, imported in one place so Alembic and the tests see the whole schema."""

from management_server.bus.models import OutboxMessage, ProcessedEvent
from management_server.db import Base
from management_server.gateways.models import Gateway
from management_server.users.models import User

__all__ = ["Base", "Gateway", "OutboxMessage", "ProcessedEvent", "User"]
