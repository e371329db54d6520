"""The model version a route is about, loaded if the caller may see it (their own; any for an admin), else 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from management_server.auth.deps import Reader
from management_server.db import SessionDep
from management_server.deps import found
from management_server.freqai import service
from management_server.freqai.models import ModelVersion

NOT_FOUND = "No such model."


async def visible_model(model_id: uuid.UUID, session: SessionDep, principal: Reader) -> ModelVersion:
    return found(await service.visible(session, principal.viewer, model_id), NOT_FOUND)


VisibleModel = Annotated[ModelVersion, Depends(visible_model)]
