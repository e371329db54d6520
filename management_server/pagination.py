"""Cursors of the list routes: where the next page starts, as an opaque token.

A page ordered by ``(created_at, id)`` ends at its last row; the cursor is that row's key, so the next page is
``(created_at, id) > cursor``: no row is skipped or seen twice when rows are added or removed between pages (an
offset would shift), and the database reads from the index, however deep the page.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

BAD_CURSOR = (
    "cursor is not one this server gave (it comes from the X-Next-Cursor header of a page): list again without it"
)


def encode(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The key a cursor stands for; ValueError for anything :func:`encode` did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, row_id = text.split("|")
        at = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(BAD_CURSOR) from exc
    if at.tzinfo is None:
        raise ValueError(BAD_CURSOR)
    return at, uuid.UUID(row_id)
