"""The ``record`` local activity: what a case's decisions ask, written at once.

The status rows and the outbox's messages of a batch go in one database transaction (the mail
relay sends the messages from there, never the workflow), then any release registration goes to
the Temporal server. A retry redoes only what is not done: rows upsert by the case's step, a
message is recorded once by its key, and a release takes a case once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from temporalio import activity

from activities.mailer import message_id
from activities.relay import count
from activities.releases import Registrar
from activities.store import CaseStore, OutboxMessage
from activities.templates import render
from settings import Settings
from workflows.contract import (
    ActivityName,
    DecidingTask,
    Notify,
    Persist,
    Record,
    RecordResult,
    Register,
)


class RecordActivities:
    """``wake``: called once a batch with messages is committed (the worker's mail relay)."""

    def __init__(
        self,
        store: CaseStore,
        settings: Settings,
        registrar: Registrar | None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.registrar = registrar
        self._wake = wake

    @activity.defn(name=ActivityName.RECORD)
    async def record(self, request: Record) -> RecordResult:
        try:
            return await self._record(request)
        except Exception as err:
            # Retried by the workflow's policy, with back-off: each failed attempt says why.
            structlog.get_logger().warning(
                "case.record_failed",
                attempt=activity.info().attempt,
                error=f"{type(err).__name__}: {err}"[:500],
            )
            raise

    async def _record(self, request: Record) -> RecordResult:
        persists = [e for e in request.effects if isinstance(e, Persist)]
        messages = [
            self._message(e, request.task) for e in request.effects if isinstance(e, Notify)
        ]
        registers = [e for e in request.effects if isinstance(e, Register)]
        claim = None
        if request.claim is not None:
            first = persists[0].case if persists else None
            assert first is not None, "the opening record carries the case's first row"
            claim = (first, request.claim)
        failed: Exception | None = None
        owner: str | None = None
        try:
            owner = await self.store.record(persists, messages, at=datetime.now(UTC), claim=claim)
        except Exception as err:
            if claim is not None:
                raise  # nothing goes before the number is claimed
            failed = err  # the registrations still go: a database outage holds no release
        if claim is not None and owner != request.claim:
            return RecordResult(owner=owner or "")  # the number is another run's: nothing done
        for effect in registers:
            if self.registrar is None:
                raise RuntimeError("a release registration needs a Temporal client (Registrar)")
            await self.registrar.register(effect)
        if failed is not None:
            raise failed
        if messages and self.settings.smtp_url is None:
            for message in messages:  # no SMTP server: kept in the outbox, as configured
                count(activity.metric_meter(), "kept", message.template)
                structlog.get_logger().info(
                    "notify.kept", key=message.key, to=message.recipient, subject=message.subject
                )
        elif messages and self._wake is not None:
            self._wake()
        structlog.get_logger().debug(
            "case.recorded",
            rows=len(persists),
            messages=len(messages),
            registrations=len(registers),
        )
        return RecordResult(owner=owner)

    def _message(self, request: Notify, task: DecidingTask | None) -> OutboxMessage:
        # Resolved here, not in the workflow, so a changed team address needs no replay.
        to = {
            "support": self.settings.support_email,
            "development": self.settings.development_email,
        }.get(request.recipient, request.contact_email)
        rendered = render(request.template, request.case_number, request.facts)
        return OutboxMessage(
            key=request.key,
            case_number=request.case_number,
            template=str(request.template),
            recipient=to,
            subject=rendered.subject,
            body=rendered.body,
            message_id=message_id(request.key),
            seq=request.seq,
            run_id=task.run_id if task else None,
            task_id=task.event_id if task else None,
            task_at=task.at if task else None,
        )
