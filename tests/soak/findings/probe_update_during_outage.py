"""Open finding (soak seed 40002), reproduced in about 30 s: an update sent while no worker
runs, the case's timer firing meanwhile, then a worker back: the history no longer replays.

Not in ``make test`` (it fails today); run it by path::

    .venv/bin/pytest tests/soak/findings/probe_update_during_outage.py

What happens: the last workflow task before the outage issued no command (an activity's result);
the update's speculative task then timed out on the gone worker's sticky queue. The next worker,
replaying from scratch, hands that result over *together with* the update and the timer, in one
activation (``do_update, resolve_activity, fire_timer``), while a full replay gives it on its own
first (``resolve_activity``, then ``do_update, fire_timer``). The SDK applies updates first, so
the email lane is still busy with its last batch in the live run and idle in the replay: the
commands come in another order (``TMPRL1100 Activity machine does not handle ...
UpsertWorkflowSearchAttributes``) and the case is stuck from its next replay on.
"""

from __future__ import annotations

import asyncio

from tests.reliability.harness import wait_until
from tests.reliability.test_replay import replayer
from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.case import SupportCase
from workflows.contract import DeadlinePolicy
from workflows.release import Release


async def test_an_update_during_an_outage_with_a_timer_firing_replays(
    env, worker_settings, store, unique
) -> None:
    policy = DeadlinePolicy(pcr_reminder="15s", pcr_closing="1h")
    case = Case(env, worker_settings.task_queue, unique("outage-update"))

    async def settled() -> bool:
        described = (await case.handle.describe()).raw_description
        return not described.pending_activities and not described.HasField("pending_workflow_task")

    async def fired() -> bool:
        events = (await case.handle.fetch_history()).events
        return any(e.HasField("timer_fired_event_attributes") for e in events)

    async def what() -> str:
        return str(await case.handle.describe())

    async with build_worker(env.client, worker_settings, store):
        await case.open(policy=policy)
        await case.to("Tier 1 Analysis", TIER1)
        await case.to("Pending Customer Response", TIER1)
        await wait_until(settled, 30, what)
    # No worker: the customer's reply (an update) waits; the reminder's timer fires meanwhile.
    reply = asyncio.create_task(case.reply("Here is the log."))
    await wait_until(fired, 60, what)
    async with build_worker(env.client, worker_settings, store):
        await reply
        await wait_until(settled, 30, what)
    await replayer(SupportCase, Release).replay_workflow(await case.handle.fetch_history())
