"""Every log line written while an activity runs carries the case number and the workflow id.

A worker interceptor binds structlog context variables around each activity execution (each runs
in its own task, so the binding never leaks into another activity): ``case_number`` from the
activity's input (a ``case_number`` field, or that of its ``case``), else from a ``case-<n>``
workflow id; ``workflow_id``, ``activity`` and ``attempt`` from ``activity.info()``. Records of the
standard library's loggers (Temporal's own) get them too, through ``logs.configure``.
"""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from workflows.contract import CASE_ID_PREFIX


def case_number_of(args: Any, workflow_id: str | None) -> str | None:
    """The case an activity works on: from its input, else from the workflow id."""
    for arg in args:
        number = getattr(arg, "case_number", None)
        if number is None:
            number = getattr(getattr(arg, "case", None), "case_number", None)
        if number is None and isinstance(arg, dict):
            number = arg.get("case_number")
        if isinstance(number, str):
            return number
    if workflow_id and workflow_id.startswith(CASE_ID_PREFIX):
        return workflow_id.removeprefix(CASE_ID_PREFIX)
    return None


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        context: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        number = case_number_of(input.args, info.workflow_id)
        if number is not None:
            context["case_number"] = number
        with structlog.contextvars.bound_contextvars(**context):
            return await self.next.execute_activity(input)


class ActivityLogContext(Interceptor):
    """Pass to ``Worker(interceptors=[...])``."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)
