"""``Release``: the registry and clock of one release.

Cases register on entering Pending Release; the workflow sleeps until ``ships_at`` (or a
``ship_now``), then tells every registered case through a batching activity, so its own history
grows by one activity per thousand cases, not one signal per case. It stays open after shipping:
a case that registers late is answered by the next batch, at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy

from workflows.contract import (
    RELEASE_WORKFLOW,
    FanOut,
    FanOutResult,
    Instant,
    RegisterCase,
    ReleaseInput,
    ReleaseStatus,
    Reschedule,
)
from workflows.payloads import decode_object

BATCH = 1_000
HISTORY_BOUND = 5_000


class ReleaseState(BaseModel):
    release_id: str
    ships_at: Instant | None = None
    shipped_at: Instant | None = None
    registered: list[str] = Field(default_factory=list)
    notified: int = 0  # registered[:notified] have been told
    skipped: int = 0


@workflow.defn(name=RELEASE_WORKFLOW)
class Release:
    @workflow.init
    def __init__(self, start: RawValue) -> None:
        data = decode_object([start], "release input")
        if "carried" in data:
            self._state = ReleaseState.model_validate(data["carried"])
        else:
            release = ReleaseInput.model_validate(data)
            self._state = ReleaseState(release_id=release.release_id, ships_at=release.ships_at)
        self._known = set(self._state.registered)
        self._ship_requested = False

    @workflow.run
    async def run(self, start: RawValue) -> ReleaseStatus:
        while self._state.shipped_at is None:
            await self._wait_for_ship_time()
        while True:
            await workflow.wait_condition(
                lambda: self._state.notified < len(self._state.registered) or self._too_long()
            )
            if self._too_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new({"carried": self._state.model_dump(mode="json")})
            await self._fan_out_next_batch()

    async def _wait_for_ship_time(self) -> None:
        ships_at = self._state.ships_at
        left = None if ships_at is None else ships_at - workflow.now()
        if left is not None and left <= timedelta(0):
            self._ship(ships_at)
            return
        try:
            await workflow.wait_condition(
                lambda: self._ship_requested or self._state.ships_at != ships_at,
                timeout=left,
                timeout_summary=f"release {self._state.release_id} ships",
            )
        except TimeoutError:
            return  # re-checked against the clock on the next pass
        if self._ship_requested:
            self._ship(workflow.now())

    def _ship(self, at: datetime | None) -> None:
        self._state.shipped_at = at or workflow.now()
        workflow.logger.info("release shipped", extra={"release_id": self._state.release_id})

    async def _fan_out_next_batch(self) -> None:
        s = self._state
        assert s.shipped_at is not None
        batch = s.registered[s.notified : s.notified + BATCH]
        result = await workflow.execute_activity(
            "fan_out_release",
            FanOut(release_id=s.release_id, shipped_at=s.shipped_at, case_numbers=batch),
            result_type=FanOutResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
            summary=f"tell {len(batch)} cases that {s.release_id} shipped",
        )
        s.notified += len(batch)
        s.skipped += result.skipped

    def _too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_BOUND
        )

    @workflow.signal
    def ship_now(self) -> None:
        self._ship_requested = True

    @workflow.signal
    def register_case(self, request: RegisterCase) -> None:
        if request.case_number not in self._known:
            self._known.add(request.case_number)
            self._state.registered.append(request.case_number)

    @workflow.signal(name="reschedule")
    def reschedule(self, request: Reschedule) -> None:
        if self._state.shipped_at is not None:
            workflow.logger.warning("reschedule ignored: the release has shipped")
            return
        self._state.ships_at = request.ships_at

    @workflow.query
    def status(self) -> ReleaseStatus:
        s = self._state
        return ReleaseStatus(
            release_id=s.release_id,
            ships_at=s.ships_at,
            shipped_at=s.shipped_at,
            cases_registered=len(s.registered),
            cases_notified=s.notified,
            cases_to_notify=len(s.registered) - s.notified,
        )
