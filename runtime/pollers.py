"""Is a worker polling the task queue? Asked of Temporal (``DescribeTaskQueue``), not guessed.

A worker that has just started (``make run`` printing its first lines, a test's fixture) polls a
moment later: whoever needs a poller waits for one, up to a bound, before saying there is none.
"""

from __future__ import annotations

import asyncio

from rich.console import Console
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

# How long a command waits for a worker to poll before it says that none does.
POLLER_WAIT = 10.0
# How often it asks meanwhile: a poller shows up well within a second of the worker's start.
ASK_EVERY = 0.2
# Answers a busy server gives now and then: the question is asked again until the wait is over.
TRANSIENT = frozenset(
    {
        RPCStatusCode.CANCELLED,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


async def pollers(client: Client, task_queue: str) -> list[str]:
    """The identities (``pid@host``) of the workers polling ``task_queue`` for workflow tasks."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return [poller.identity for poller in response.pollers]


async def wait_for_poller(
    client: Client,
    task_queue: str,
    within: float = POLLER_WAIT,
    *,
    identity: str | None = None,
) -> bool:
    """Whether a worker (the one with ``identity``, if given) polls ``task_queue`` within
    ``within`` seconds. The server lists a stopped worker for minutes: to know that a restarted
    worker polls, name it by its identity."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            seen = await pollers(client, task_queue)
        except RPCError as err:
            if err.status not in TRANSIENT or loop.time() >= deadline:
                raise
            seen = []
        if (identity in seen) if identity is not None else bool(seen):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(ASK_EVERY, max(0.0, deadline - loop.time())))


async def worker_polls(client: Client, task_queue: str, console: Console) -> bool:
    """``wait_for_poller`` for people, up to ``POLLER_WAIT``: a spinner on ``console`` while it
    waits (none when a worker already polls, nor when ``console`` is not a terminal)."""
    try:
        if await pollers(client, task_queue):
            return True
    except RPCError as err:
        if err.status not in TRANSIENT:
            raise
    within = POLLER_WAIT
    with console.status(
        f"waiting up to {within:.0f} s for a worker to poll task queue {task_queue} (make run)"
    ):
        return await wait_for_poller(client, task_queue, within)
