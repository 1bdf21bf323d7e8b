"""The worker's deadline-policy settings, handed to a case when it opens."""

from __future__ import annotations

from temporalio import activity

from settings import Settings, policy_settings
from workflows.contract import ActivityName, PolicySettings


class PolicyActivities:
    def __init__(self, settings: Settings) -> None:
        # Parsed once: a bad setting stops the worker at start, never a case.
        self._policy = policy_settings(settings)

    @activity.defn(name=ActivityName.POLICY_SETTINGS)
    async def policy_settings(self) -> PolicySettings:
        return self._policy
