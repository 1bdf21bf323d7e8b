"""A release's registrations kept in the case store rather than in its carried state."""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.store import CaseStore
from workflows.contract import ActivityName, BacklogChunk


class BacklogActivities:
    def __init__(self, store: CaseStore) -> None:
        self.store = store

    @activity.defn(name=ActivityName.RELEASE_BACKLOG_ADD)
    async def release_backlog_add(self, chunk: BacklogChunk) -> None:
        """Keep a chunk of a release's registrations in the store (a retry writes nothing new)."""
        async with heartbeating():
            await self.store.backlog_add(chunk.release_id, chunk.chunk, chunk.case_numbers)

    @activity.defn(name=ActivityName.RELEASE_BACKLOG_LOAD)
    async def release_backlog_load(self, chunk: BacklogChunk) -> BacklogChunk:
        async with heartbeating():
            numbers = await self.store.backlog(chunk.release_id, chunk.chunk)
        return chunk.model_copy(update={"case_numbers": numbers})
