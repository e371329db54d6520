"""Every ORM model, imported in one place so Alembic and the tests see the whole schema."""

from management_server.analytics.models import UserRiskState
from management_server.audit.models import AuditEntry
from management_server.auth.models import PersonalAccessToken, RefreshToken
from management_server.backups.models import ScheduledRun
from management_server.botdb.models import BotDatabase
from management_server.bots.models import Bot, Trade
from management_server.bus.models import OutboxMessage, ProcessedEvent
from management_server.credentials.models import ExchangeCredential
from management_server.db import Base
from management_server.freqai.models import BotModelDeployment, ModelVersion
from management_server.gateways.models import Gateway
from management_server.strategies.models import Strategy
from management_server.users.models import User

__all__ = [
    "AuditEntry",
    "Base",
    "Bot",
    "BotDatabase",
    "BotModelDeployment",
    "ExchangeCredential",
    "Gateway",
    "ModelVersion",
    "OutboxMessage",
    "PersonalAccessToken",
    "ProcessedEvent",
    "RefreshToken",
    "ScheduledRun",
    "Strategy",
    "Trade",
    "User",
    "UserRiskState",
]
