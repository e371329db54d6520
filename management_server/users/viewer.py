"""Who is asking, as the services see it: the user, and whether they act with admin power.

Admin power is decided in one place, :attr:`management_server.auth.deps.Principal.is_admin`: the role admin
*and* the ``admin`` scope on the token (every login's access token has it; a personal access token only if it
was made with it). Routes hand services ``principal.viewer``; services never read ``user.role`` to decide what
someone may do, so an admin's ``trade``-only token acts as a plain user's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from management_server.users.models import User

if TYPE_CHECKING:
    from management_server.auth.principals import UserFacts


@dataclass(frozen=True)
class Viewer:
    user: User | UserFacts  # the row, or what authentication read of it
    admin: bool

    @property
    def id(self) -> uuid.UUID:
        return self.user.id

    def may_see(self, owner_id: uuid.UUID) -> bool:
        """Their own, or anyone's for an admin."""
        return self.admin or owner_id == self.user.id
