"""structlog set-up: console lines for people, JSON lines for containers (``CASES_LOG_FORMAT``).

The standard library's records (Temporal's own, the workflow logger's) go through the same
renderer, so one process writes one format.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog


def configure(fmt: str = "console", level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        redact_secrets,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if fmt == "json" else _identity,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# Fields whose values are secrets, whatever logs them; and a password inside any URL.
SECRET_FIELDS = re.compile(r"api_?key|password|passwd|secret|token|private_key|authorization", re.I)
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)


def redact_secrets(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Mask secrets in every line: an API key, a password, the password of a database URL."""
    for key, value in event.items():
        if isinstance(key, str) and SECRET_FIELDS.search(key) and value:
            event[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event[key] = URL_PASSWORD.sub(r"\1***@", value)
    return event


def _identity(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event
