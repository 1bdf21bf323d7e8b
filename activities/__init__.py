"""The case workflow's activities: persist (case store) and notify (SMTP with an outbox).

A worker needs ``upgrade``, ``CaseStore`` and ``CaseActivities``::

    await upgrade(settings.database_url)  # the schema, brought up to date
    store = CaseStore(settings.database_url)
    Worker(client, ..., activities=CaseActivities(store, settings).activities())

Workflow code takes activity names, timeouts and retry policies from ``activities.options``.

Exports resolve lazily: workflow code imports ``activities.options`` inside Temporal's sandbox,
and an eager import here would drag SQLAlchemy and aiosmtplib into every workflow run.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activities.case_activities import CaseActivities
    from activities.migrate import upgrade
    from activities.notify import NotifyActivities
    from activities.persist import PersistActivities
    from activities.store import CaseStore, OutboxEntry

_EXPORTS = {
    "CaseActivities": "activities.case_activities",
    "CaseStore": "activities.store",
    "NotifyActivities": "activities.notify",
    "OutboxEntry": "activities.store",
    "PersistActivities": "activities.persist",
    "upgrade": "activities.migrate",
}

__all__ = [
    "CaseActivities",
    "CaseStore",
    "NotifyActivities",
    "OutboxEntry",
    "PersistActivities",
    "upgrade",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'activities' has no attribute {name!r}")
    return getattr(import_module(module), name)
