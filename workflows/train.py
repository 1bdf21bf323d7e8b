"""``ReleaseTrain``: what a release train's Temporal Schedule starts (``starter/schedules.py``).

A schedule can only start a workflow whose id is a fixed prefix plus the scheduled time, but cases
must know the id of their release ahead (``2026.12``) and a release may already exist because
cases registered with it. So the schedule starts a short ``ReleaseTrain`` run; it names the
release after its ship instant (``strftime(release_format)`` of scheduled time + ``ships_after``)
and opens ``release-<release_id>`` through the ``open_release`` activity (signal-with-start of
``reschedule``): it creates the release, or schedules the one cases created already.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ApplicationError

from workflows.contract import (
    RELEASE_TRAIN_WORKFLOW,
    ActivityName,
    Instant,
    ReleaseInput,
    TrainInput,
)
from workflows.payloads import Malformed, decode_object, explain

OPEN_RELEASE_TIMEOUT = timedelta(seconds=30)

# Set by the server on every workflow a Schedule starts: the instant the action was due.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TrainResult(BaseModel):
    train: str
    release_id: str
    scheduled_at: Instant
    ships_at: Instant


def release_id_for(release_format: str, ships_at: datetime) -> str:
    """The id of the release a train opens for this ship instant; ``ValueError`` if invalid."""
    release_id = ships_at.strftime(release_format)
    if not _RELEASE_ID.match(release_id):
        raise ValueError(
            f"release format {release_format!r} gives {release_id!r}, not a release id "
            "(letters, digits, '.', '_', '-'; at most 64)"
        )
    return release_id


def train_release(train: TrainInput, scheduled_at: datetime) -> tuple[str, datetime]:
    """The release a train firing at ``scheduled_at`` opens: its id and ship instant."""
    ships_at = train.ships_after.after(scheduled_at) if train.ships_after else scheduled_at
    return release_id_for(train.release_format, ships_at), ships_at


@workflow.defn(name=RELEASE_TRAIN_WORKFLOW)
class ReleaseTrain:
    """Started by a Schedule: opens (creates or schedules) the train's next release."""

    @workflow.run
    async def run(self, start: RawValue) -> TrainResult:
        try:
            train = TrainInput.model_validate(decode_object([start], "release train input"))
            scheduled_at = (
                workflow.info().typed_search_attributes.get(SCHEDULED_START_TIME) or workflow.now()
            )
            release_id, ships_at = train_release(train, scheduled_at)
        except (Malformed, ValidationError, ValueError) as err:
            raise ApplicationError(
                f"invalid release train input: {explain(err)}",
                type="InvalidReleaseTrainInput",
                non_retryable=True,
            ) from None
        await workflow.execute_activity(
            ActivityName.OPEN_RELEASE,
            ReleaseInput(release_id=release_id, ships_at=ships_at),
            start_to_close_timeout=OPEN_RELEASE_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
            summary=f"open release {release_id}, ships {ships_at:%Y-%m-%d %H:%M} UTC",
        )
        workflow.logger.info(
            "release train opened a release",
            extra={"train": train.train, "release_id": release_id},
        )
        return TrainResult(
            train=train.train,
            release_id=release_id,
            scheduled_at=scheduled_at,
            ships_at=ships_at,
        )
