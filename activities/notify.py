"""The ``notify`` activity: record a message in the outbox, then send it at most once.

The outbox row, keyed by the effect's idempotency key, is written before anything is sent, so
a retried activity finds it and never mails twice. Once the SMTP server has accepted a message,
marking the row sent is retried within the attempt while the database is away (a retry of the
whole activity would send it again).

One gap no sender can close: a worker killed between the SMTP server's acceptance and the
record of it. SMTP has no way to ask "did you get this?", so the next attempt cannot know; it
sends again rather than risk losing the message, with the same Message-ID (mail clients collapse
it), and counts the resend in ``outbox.resent_in_doubt`` (and ``result="resent_in_doubt"``), so
every possible duplicate is on record. The row's ``handed_at``, written just before the hand-over,
is how it knows.

A message the server refuses for good (``mailer.Undeliverable``: a 5xx answer, an address it
cannot take) is marked undelivered in the outbox with the server's answer, counted
(``result="undelivered"``) and returned to the workflow, which shows it in the case's snapshot;
the rest of a batch goes on. It is never sent again, also when a batch is retried.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Literal

import structlog
from temporalio import activity

from activities.heartbeat import heartbeating
from activities.mailer import Mailer, Undeliverable, message_id
from activities.store import CaseStore, OutboxMessage
from activities.templates import render
from settings import Settings
from workflows.contract import ActivityName, Notify, UndeliveredMessage
from workflows.effects import NOTIFY_TIMEOUT

# What the workflow gets back for each message: a word, or the refusal it shows in the snapshot.
NotifyResult = Literal["sent", "already_sent", "kept"] | UndeliveredMessage

NOTIFICATIONS = "case_notifications"
# How long an attempt keeps trying to mark a sent message sent: well inside its start-to-close.
RECORD_SENT_PATIENCE = NOTIFY_TIMEOUT.total_seconds() - 30


def _count(result: str, template: str) -> None:
    """``case_notifications{result,template}`` on the worker's Prometheus endpoint."""
    if not activity.in_activity():  # called directly (tests, scripts): no meter
        return
    activity.metric_meter().create_counter(
        NOTIFICATIONS, "Notifications by outcome: sent, kept, already_sent, failed"
    ).add(1, {"result": result, "template": template})


class NotifyActivities:
    def __init__(self, store: CaseStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        # No SMTP URL is a supported setup (development, demos): messages wait in the outbox.
        self.mailer = Mailer(settings.smtp_url, settings.mail_from) if settings.smtp_url else None

    @activity.defn(name=ActivityName.NOTIFY)
    async def notify(self, request: Notify) -> NotifyResult:
        async with heartbeating():
            return await self._counted(request)

    @activity.defn(name=ActivityName.NOTIFY_BATCH)
    async def notify_batch(self, requests: list[Notify]) -> list[NotifyResult]:
        """``notify`` for each, in order. A failure raises and Temporal retries the batch: the
        messages already sent are found sent in the outbox and skipped."""
        async with heartbeating():
            return [await self._counted(request) for request in requests]

    async def _counted(self, request: Notify) -> NotifyResult:
        template = str(request.template)
        try:
            result = await self._notify(request)
        except Exception:
            _count("failed", template)
            raise
        if not isinstance(result, UndeliveredMessage):
            _count(result, template)
        return result

    async def _notify(self, request: Notify) -> NotifyResult:
        log = structlog.get_logger().bind(
            case_number=request.case_number,
            key=request.key,
            template=str(request.template),
            attempt=activity.info().attempt if activity.in_activity() else None,
        )
        # Resolved here, not in the workflow, so a changed team address needs no replay.
        to = {
            "support": self.settings.support_email,
            "development": self.settings.development_email,
        }.get(request.recipient, request.contact_email)
        rendered = render(request.template, request.case_number, request.facts)
        entry = await self.store.outbox_add(
            OutboxMessage(
                key=request.key,
                case_number=request.case_number,
                template=str(request.template),
                recipient=to,
                subject=rendered.subject,
                body=rendered.body,
                message_id=message_id(request.key),
            ),
            at=datetime.now(UTC),
        )
        if entry.sent_at is not None:
            log.info("notify.already_sent", sent_at=entry.sent_at.isoformat())
            return "already_sent"
        if entry.undelivered_at is not None:  # refused for good by an earlier attempt
            return UndeliveredMessage(
                key=entry.key, template=entry.template, reason=entry.undelivered_reason or ""
            )
        if self.mailer is None:
            log.info("notify.kept", to=entry.recipient, subject=entry.subject)
            return "kept"

        if entry.in_doubt:
            _count("resent_in_doubt", str(request.template))
            log.warning("notify.resend_in_doubt", handed_at=str(entry.handed_at))
        await self.store.outbox_handing(entry.key, datetime.now(UTC), in_doubt=entry.in_doubt)
        try:
            # Built from the stored row: a retry sends what was first recorded, word for word.
            message = self.mailer.build(
                to=entry.recipient,
                subject=entry.subject,
                body=entry.body,
                msg_id=entry.message_id,
                date=entry.created_at,
            )
            await self.mailer.send(message, entry.recipient)
        except Undeliverable as refused:
            await self.store.outbox_undelivered(entry.key, datetime.now(UTC), refused.reason)
            _count("undelivered", entry.template)
            log.warning("notify.undelivered", to=entry.recipient, reason=refused.reason)
            return UndeliveredMessage(key=entry.key, template=entry.template, reason=refused.reason)
        except Exception as err:
            await self.store.outbox_failed(entry.key, f"{type(err).__name__}: {err}")
            log.warning("notify.failed", to=entry.recipient, error=str(err))
            raise  # Temporal retries with the notify retry policy
        await self._record_sent(entry.key, datetime.now(UTC), log)
        log.info("notify.sent", to=entry.recipient, message_id=entry.message_id)
        return "sent"

    async def _record_sent(self, key: str, at: datetime, log: structlog.BoundLogger) -> None:
        """Mark the message sent, waiting out a database that is away: a failure here, raised,
        would make Temporal retry the activity and send the message a second time (a database
        cut for ten seconds under thirty cases doubled three emails of 108)."""
        give_up = time.monotonic() + RECORD_SENT_PATIENCE
        delay = 0.5
        while True:
            try:
                await self.store.outbox_sent(key, at)
                return
            except Exception as err:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("notify.record_sent_retry", error=str(err), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
