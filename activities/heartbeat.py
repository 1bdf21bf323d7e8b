"""Heartbeats for activities that are otherwise one quick call: a worker that dies mid-attempt is
then noticed within the heartbeat timeout (``workflows.release.FAN_OUT_HEARTBEAT``) and the
attempt retried, instead of after the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity

# How often ``heartbeating`` beats: well inside the heartbeat timeout.
HEARTBEAT_INTERVAL = timedelta(seconds=2)


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat every HEARTBEAT_INTERVAL while the block runs (nothing outside an activity).

    The first beat comes after one interval: a write that takes milliseconds sends none."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL.total_seconds())
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
