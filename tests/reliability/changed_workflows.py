"""One throwaway change of ``SupportCase``, in each of the shapes it takes on its way in (README,
"Changing the workflow safely"), for the replay tests; a module of its own so that the workflow
sandbox, which imports it, finds nothing but workflow code here. The change: a one-second pause
before the case opens its record.

- ``SupportCaseWithAnExtraTimer``: the change deployed as it is, one more command at the start.
  Replaying a running case's history against it must fail.
- ``SupportCasePatched`` (deploy 1): the change behind ``workflow.patched``: new runs take the new
  path and record the patch's marker, histories written without it keep the old one.
- ``SupportCaseDeprecated`` (deploy 2, once no run from before deploy 1 is open): the new path
  only, with ``workflow.deprecate_patch``, which still writes the marker as deprecated, so runs
  of deploy 1 and deploy 2 replay alike.
- ``SupportCaseChanged`` (deploy 3, once no run from before deploy 2 is open): the new path, no
  call at all: the change is the code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue

from workflows.case import SupportCase
from workflows.contract import Snapshot

PATCH = "pause-before-first-record"
PAUSE = timedelta(seconds=1)


@workflow.defn(name="SupportCase")
class SupportCaseWithAnExtraTimer(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        await workflow.sleep(PAUSE)
        return await super().run(start)


@workflow.defn(name="SupportCase")
class SupportCasePatched(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        if workflow.patched(PATCH):
            await workflow.sleep(PAUSE)
        return await super().run(start)


@workflow.defn(name="SupportCase")
class SupportCaseDeprecated(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        workflow.deprecate_patch(PATCH)
        await workflow.sleep(PAUSE)
        return await super().run(start)


@workflow.defn(name="SupportCase")
class SupportCaseChanged(SupportCase):
    @workflow.run
    async def run(self, start: RawValue) -> Snapshot:
        await workflow.sleep(PAUSE)
        return await super().run(start)
