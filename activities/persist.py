"""The ``persist`` activity: mirror the case row and its status change into the case store."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities.heartbeat import heartbeating
from activities.store import CaseStore
from workflows.contract import ActivityName, BacklogChunk, ClaimCase, Persist


class PersistActivities:
    def __init__(self, store: CaseStore) -> None:
        self.store = store

    @activity.defn(name=ActivityName.PERSIST)
    async def persist(self, request: Persist) -> None:
        # Safe to retry as often as Temporal likes: the store upserts by the workflow's seq.
        async with heartbeating():
            await self.store.save_case(request)
        structlog.get_logger().debug(
            "persist.saved",
            case_number=request.case.case_number,
            key=request.key,
            seq=request.case.seq,
            status=str(request.case.status),
        )

    @activity.defn(name=ActivityName.PERSIST_BATCH)
    async def persist_batch(self, requests: list[Persist]) -> None:
        # One transaction for the batch: a retry rewrites it all, harmlessly (upserts by seq).
        async with heartbeating():
            await self.store.save_cases(requests)
        structlog.get_logger().debug(
            "persist.saved_batch",
            keys=[r.key for r in requests],
            count=len(requests),
        )

    @activity.defn(name=ActivityName.CLAIM_CASE)
    async def claim_case(self, claim: ClaimCase) -> str:
        """Claim the case number for the run that opens it; the run that holds it (this one,
        retried or not, or another: then the caller refuses to run; "" an unrecorded one)."""
        async with heartbeating():
            owner = await self.store.claim(claim.case, claim.run_id)
        structlog.get_logger().info(
            "case.claim",
            case_number=claim.case.case_number,
            run_id=claim.run_id,
            granted=owner == claim.run_id,
        )
        return owner or ""

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
