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
        add_extra,
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


# The keys structlog writes itself: a record's ``extra`` never replaces them (it would turn the
# line's message into whatever a caller passed as ``extra={"event": ...}``).
OWN_KEYS = ("event", "level", "logger", "timestamp")
_extra_adder = structlog.stdlib.ExtraAdder()


def add_extra(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A standard-library record's ``extra`` fields; one named like an own key is kept as
    ``extra_<key>``."""
    own = {key: event[key] for key in OWN_KEYS if key in event}
    event = _extra_adder(logger, name, event)  # type: ignore[arg-type]
    for key, value in own.items():
        if event[key] is not value:
            event[f"extra_{key}"] = event[key]
            event[key] = value
    return event


# How deep redaction looks into nested fields (dicts, lists) of a line.
_REDACT_DEPTH = 8


def redact_secrets(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Mask secrets in every line, also in nested fields: an API key, a password, the password
    of a database URL."""
    return {key: _redacted(key, value, 0) for key, value in event.items()}


def _redacted(key: object, value: object, depth: int) -> object:
    if isinstance(key, str) and SECRET_FIELDS.search(key) and value:
        return "***"
    if isinstance(value, str):
        return URL_PASSWORD.sub(r"\1***@", value) if "@" in value else value
    if depth >= _REDACT_DEPTH:
        return value if isinstance(value, int | float | bool) or value is None else "…"
    if isinstance(value, dict):
        return {k: _redacted(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):  # not tuples: exc_info is one, and stays one
        return [_redacted(None, v, depth + 1) for v in value]
    return value


def _identity(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event
