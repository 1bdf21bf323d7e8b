"""Two edits of ``SupportCase`` for the replay tests, in a module of their own so that the
workflow sandbox, which imports it, finds nothing but workflow code here.

- ``SupportCaseWithAnExtraTimer``: what a careless change looks like, one more command at the
  start (a short timer before the run loop) deployed as it is. Replaying a running case's history
  against it must fail.
- ``SupportCasePatched``: the same change done safely, behind ``workflow.patched``: new runs take
  the new path, histories written without the marker keep the old one.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue

from workflows.case import SupportCase
from workflows.contract import Snapshot


@workflow.defn(name="SupportCase")
class SupportCaseWithAnExtraTimer(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(start)


@workflow.defn(name="SupportCase")
class SupportCasePatched(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        if workflow.patched("pause-before-first-effect"):
            await workflow.sleep(timedelta(seconds=1))
        return await super().run(start)
