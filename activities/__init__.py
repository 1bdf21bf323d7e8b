"""The case workflow's activities and the worker's mail relay.

``record`` writes what a case decided (its rows, its outbox messages, a release registration);
the mail relay (``MailRelay``) sends the outbox. A worker needs ``upgrade``, ``CaseStore``,
``CaseActivities`` and ``MailRelay``::

    await upgrade(settings.database_url)  # the schema, brought up to date
    store = CaseStore(settings.database_url)
    relay = MailRelay(store, settings, client)
    activities = CaseActivities(store, Registrar(client), settings, relay.wake).activities()

Workflow code never imports this package: how it calls the activities is in
``workflows.effects``, their names in ``workflows.contract``.
"""

from __future__ import annotations

from activities.case_activities import CaseActivities
from activities.migrate import upgrade
from activities.record import RecordActivities
from activities.relay import MailRelay
from activities.releases import Registrar
from activities.store import CaseStore, OutboxEntry

__all__ = [
    "CaseActivities",
    "CaseStore",
    "MailRelay",
    "OutboxEntry",
    "RecordActivities",
    "Registrar",
    "upgrade",
]
