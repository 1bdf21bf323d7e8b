"""All the case workflow's activities as one object holding their dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.backlog import BacklogActivities
from activities.policy import PolicyActivities
from activities.record import RecordActivities
from activities.releases import Registrar
from activities.store import CaseStore
from settings import Settings, get_settings


class CaseActivities(RecordActivities, BacklogActivities, PolicyActivities):
    """``record`` and ``policy_settings`` (the case's local activities) and a release's
    backlog, sharing one store (and so one connection pool). ``wake``: the mail relay's."""

    def __init__(
        self,
        store: CaseStore,
        registrar: Registrar | None = None,
        settings: Settings | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        settings = settings or get_settings()
        RecordActivities.__init__(self, store, settings, registrar, wake)
        BacklogActivities.__init__(self, store)
        PolicyActivities.__init__(self, settings)

    def activities(self) -> list[Callable[..., Any]]:
        """What to pass to ``Worker(activities=...)``."""
        return [
            self.record,
            self.policy_settings,
            self.release_backlog_add,
            self.release_backlog_load,
        ]
