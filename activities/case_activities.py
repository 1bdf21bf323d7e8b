"""All the case workflow's activities as one object holding their dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.notify import NotifyActivities
from activities.persist import PersistActivities
from activities.policy import PolicyActivities
from activities.store import CaseStore
from settings import Settings, get_settings


class CaseActivities(PersistActivities, NotifyActivities, PolicyActivities):
    """``persist`` and ``notify`` (one effect, and a batch of them) sharing one store (and so
    one connection pool), and the policy settings a case reads when it opens."""

    def __init__(self, store: CaseStore, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        PersistActivities.__init__(self, store)
        NotifyActivities.__init__(self, store, settings)
        PolicyActivities.__init__(self, settings)

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
            self.policy_settings,
        ]
