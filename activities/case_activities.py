"""All the case workflow's activities as one object holding their dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.notify import NotifyActivities
from activities.persist import PersistActivities
from activities.store import CaseStore
from settings import Settings, get_settings


class CaseActivities(PersistActivities, NotifyActivities):
    """``persist`` and ``notify`` (one effect, and a batch of them) sharing one store (and so
    one connection pool)."""

    def __init__(self, store: CaseStore, settings: Settings | None = None) -> None:
        PersistActivities.__init__(self, store)
        NotifyActivities.__init__(self, store, settings or get_settings())

    def activities(self) -> list[Callable[..., Any]]:
        """What to pass to ``Worker(activities=...)``."""
        return [
            self.persist,
            self.persist_batch,
            self.claim_case,
            self.release_backlog_add,
            self.release_backlog_load,
            self.notify,
            self.notify_batch,
        ]
