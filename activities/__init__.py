"""The case workflow's activities: persist (case store) and notify (SMTP with an outbox).

A worker needs ``upgrade``, ``CaseStore`` and ``CaseActivities``::

    await upgrade(settings.database_url)  # the schema, brought up to date
    store = CaseStore(settings.database_url)
    Worker(client, ..., activities=CaseActivities(store, settings).activities())

Workflow code never imports this package: how it calls the activities is in
``workflows.effects``, their names in ``workflows.contract``.
"""

from __future__ import annotations

from activities.case_activities import CaseActivities
from activities.migrate import upgrade
from activities.notify import NotifyActivities
from activities.persist import PersistActivities
from activities.store import CaseStore, OutboxEntry

__all__ = [
    "CaseActivities",
    "CaseStore",
    "NotifyActivities",
    "OutboxEntry",
    "PersistActivities",
    "upgrade",
]
