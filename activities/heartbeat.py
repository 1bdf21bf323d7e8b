"""Heartbeats for activities that are otherwise one quick call: a worker that dies mid-attempt is
then noticed within the heartbeat timeout (``activities.options.HEARTBEAT_TIMEOUT``) and the
attempt retried, instead of after the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

from activities.options import HEARTBEAT_EVERY


@contextlib.asynccontextmanager
async def heartbeating(every: float = HEARTBEAT_EVERY.total_seconds()) -> AsyncIterator[None]:
    """Heartbeat every ``every`` seconds while the block runs (nothing outside an activity).

    The first beat comes after ``every``: a write that takes milliseconds sends none at all."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
