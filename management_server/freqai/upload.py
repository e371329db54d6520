"""Receiving a bundle an admin uploads (``POST /api/v1/models/upload``): its length bounded before the form is
read, the file streamed to disk under its own limit, checked as a gateway checks a received bundle, registered.
Every refusal is a :class:`~management_server.freqai.service.ModelRefused` with the status to answer (411, 413,
422) and why."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile

from management_server.auth.principals import UserFacts
from management_server.freqai import service
from management_server.freqai.models import ModelVersion
from management_server.freqai.schemas import NAME_PATTERN
from management_server.freqai.service import ModelRefused
from management_server.freqai.store import ModelStore
from management_server.users.models import User
from shared.freqai.bundle import BundleError, SizeExceeded

UPLOAD_SLACK = 64 * 1024  # multipart headers around the file
COPY_BLOCK = 1024 * 1024
STRATEGY_CLASS = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
LIMIT = "FREQFLEET_MODEL_MAX_UPLOAD_BYTES"


def check_length(length: str | None, max_upload: int) -> None:
    """The request's Content-Length, before anything is read: said, and at most ``max_upload`` with the slack."""
    if length is None or not length.isdigit():
        raise ModelRefused(411, "Send the upload with a Content-Length header.")
    if int(length) > max_upload + UPLOAD_SLACK:
        raise ModelRefused(413, f"The upload is {int(length)} bytes; at most {max_upload} are taken ({LIMIT}).")


async def register(
    session: AsyncSession,
    uploader: User | UserFacts,
    store: ModelStore,
    form: FormData,
    *,
    max_upload: int,
    max_bundle: int,
) -> ModelVersion:
    """The form's bundle (``file``; optional ``name`` and ``strategy_class``) checked and registered as a
    succeeded version, committed (its stored file removed when the commit fails)."""
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise ModelRefused(422, "The form has no file part named 'file' holding the bundle.")
    try:
        name = _text_field(form.get("name"), "name", NAME_PATTERN)
        strategy_class = _text_field(form.get("strategy_class"), "strategy_class", STRATEGY_CLASS)
    except ValueError as exc:
        raise ModelRefused(422, str(exc)) from None
    with service.upload_workdir(store) as tmp:
        workdir = Path(tmp)
        upload = workdir / "upload"
        if await _save(file, upload, max_upload) is None:
            raise ModelRefused(413, f"The upload is larger than {max_upload} bytes ({LIMIT}).")
        try:
            checked = await asyncio.to_thread(service.check_upload, upload, workdir, max_size=max_bundle)
        except SizeExceeded as exc:
            raise ModelRefused(413, f"The bundle is refused: {exc}.") from None
        except BundleError as exc:
            raise ModelRefused(422, f"The bundle is refused: {exc}.") from None
        model = await service.register_upload(
            session, uploader, store, checked, name=name, strategy_class=strategy_class
        )
        stored_id = model.id
        try:
            await session.commit()
        except BaseException:
            store.delete(stored_id)  # no row: no file either
            raise
    return model


def _text_field(value: object, name: str, pattern: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(pattern, value) or len(value) > 100:
        raise ValueError(f"{name} must match {pattern} (at most 100 characters)")
    return value


async def _save(file: UploadFile, dest: Path, limit: int) -> int | None:
    """Copy the upload to ``dest``; its size, or None when it is over ``limit``."""
    size = 0
    with dest.open("wb") as out:
        while block := await file.read(COPY_BLOCK):
            size += len(block)
            if size > limit:
                return None
            await asyncio.to_thread(out.write, block)
    return size
