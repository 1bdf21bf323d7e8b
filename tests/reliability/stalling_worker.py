"""``python -m tests.reliability.stalling_worker``: the case worker, configured like
``worker.py``, with one fault: once a ``record`` that writes a message of template
``STALL_TEMPLATE`` has committed, it never returns, so the workflow task that decided the message
never completes. It says ``record stalled`` on stdout; the test kills it there, as a worker dies
between its record and the end of its task."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

import logs
from runtime.connection import connect
from settings import get_settings
from worker import run_worker
from workflows.contract import ActivityName, Notify, Record

STALLED = "record stalled"


class StallAfterRecord(Interceptor):
    def __init__(self, template: str) -> None:
        self.template = template

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Stall(next, self.template)


class _Stall(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, template: str) -> None:
        super().__init__(next)
        self.template = template

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        if activity.info().activity_type == ActivityName.RECORD and any(
            isinstance(arg, Record)
            and any(isinstance(e, Notify) and e.template == self.template for e in arg.effects)
            for arg in input.args
        ):
            print(STALLED, flush=True)
            await asyncio.Event().wait()
        return result


async def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)
    client = await connect()
    await run_worker(
        client, settings, interceptors=[StallAfterRecord(os.environ["STALL_TEMPLATE"])]
    )


if __name__ == "__main__":
    asyncio.run(main())
