"""structlog set-up: console lines for people, JSON lines for containers (``CASES_LOG_FORMAT``).

The standard library's records (Temporal's own, the workflow logger's) go through the same
renderer, so one process writes one format.
"""

from __future__ import annotations

import functools
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
    for key, value in event.items():
        masked = _redacted(key, value, 0)
        if masked is not value:
            event[key] = masked
    return event


@functools.lru_cache(maxsize=4096)  # field names repeat: the regex runs once per name
def _is_secret(key: str) -> bool:
    return SECRET_FIELDS.search(key) is not None


def _redacted(key: object, value: object, depth: int) -> object:
    """``value`` with its secrets masked: the same object when there is nothing to mask."""
    if isinstance(key, str) and value and _is_secret(key):
        return "***"
    if isinstance(value, str):
        return URL_PASSWORD.sub(r"\1***@", value) if "@" in value else value
    if isinstance(value, dict) and depth < _REDACT_DEPTH:
        masked = {k: _redacted(k, v, depth + 1) for k, v in value.items()}
        return value if all(masked[k] is v for k, v in value.items()) else masked
    if isinstance(value, list) and depth < _REDACT_DEPTH:  # not tuples: exc_info is one
        items = [_redacted(None, v, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _identity(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event
