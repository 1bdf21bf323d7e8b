"""The mail relay: every worker sends what the cases recorded in the outbox, outside any workflow.

A case's ``record`` writes its messages into the outbox in the same transaction as its rows, and
wakes the relay of its worker; the relay also looks every few seconds (``SWEEP``) for messages no
wake announced: another worker's that died, a retry whose back-off has passed. A case's messages
go out one at a time, in the order of its steps; cases go in parallel (``SENDERS``). A mail
server that is down holds no workflow task: it only delays mail.

Exactly once: a relay leases a message (``next_attempt_at``, renewed while it sends) before it
sends it, so two relays never send one message at once, and the row's marks (``handed_at``,
``sent_at``) are written around the hand-over; marking a message sent waits out a database blip,
since a message found unsent is sent again.

Only what a case kept: ``record`` runs inside the workflow task that decided the messages, and a
task lost with its worker is decided anew by its retry, maybe otherwise. So a message waits until
the history shows its recording task completed (``activities.tasks``), and goes if it did; if the
task was lost, its messages are dropped (a retry that decided one again has recorded it anew, and
that retry's task is the one awaited).

One gap no sender can close: a worker killed between the SMTP server's acceptance and the record
of it. SMTP has no way to ask "did you get this?", so the next attempt cannot know; it sends again
rather than risk losing the message, with the same Message-ID (mail clients collapse it), and
counts the resend in ``outbox.resent_in_doubt`` (and ``result="resent_in_doubt"``), so every
possible duplicate is on record. The row's ``handed_at``, written just before the hand-over, is
how it knows.

A message the server refuses for good (``mailer.Undeliverable``: a 5xx answer, an address it
cannot take) is marked undelivered with the server's answer, counted (``result="undelivered"``)
and told to its case (signal ``mail_undelivered``), which shows it in its snapshot; the case's
later messages go on. It is never sent again. A failure for now (no connection, a 4xx) is
retried with a back-off of 5 s doubling to 10 minutes, for as long as it takes.

Without an SMTP URL the relay does not run: messages stay in the outbox (``record`` logs them and
counts them ``kept``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import structlog
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from activities.mailer import Mailer, Undeliverable
from activities.releases import Sign, signed
from activities.store import CaseStore, OutboxEntry
from activities.tasks import task_completed
from settings import Settings
from workflows.contract import (
    Actor,
    HandlerName,
    MailUndelivered,
    Role,
    case_workflow_id,
)

NOTIFICATIONS = "case_notifications"
# Messages being sent at once, each of another case.
SENDERS = 8
# How often a relay looks for messages no wake announced, in seconds.
SWEEP = 5.0
# Cases whose next message is read per look; the soonest due first.
HEADS = 500
# A message being sent is the sender's for this long, renewed every third of it: a relay that
# died lets it lapse, and another sends it (in doubt, if the hand-over had begun).
LEASE = timedelta(seconds=30)
# Retries of a failure for now: 5 s, doubling, at most 10 minutes apart; never given up.
RETRY_FIRST = timedelta(seconds=5)
RETRY_MOST = timedelta(minutes=10)
# How long marking a sent message sent waits out a database that is away.
RECORD_SENT_PATIENCE = 90.0
# A message is looked at no sooner than this after its record: the task that recorded it
# completes a moment after the record. Until it is found completed, looked at again after its age
# (at most ``SWEEP``).
CONFIRM_FIRST = timedelta(milliseconds=100)
# Who the relay's signal names, signed with the worker's key under trusted senders.
RELAY_ACTOR = Actor(role=Role.DEVELOPMENT, name="mail relay")
TELL_ATTEMPTS = 3

log = structlog.get_logger()


def retry_delay(attempts: int) -> timedelta:
    """The back-off after the ``attempts``-th failed attempt of a message."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MOST)


def count(meter: MetricMeter, result: str, template: str) -> None:
    """``case_notifications{result,template}`` on the worker's Prometheus endpoint."""
    meter.create_counter(
        NOTIFICATIONS,
        "Notifications by outcome: sent, kept, failed, undelivered, resent_in_doubt",
    ).add(1, {"result": result, "template": template})


class MailRelay:
    def __init__(
        self,
        store: CaseStore,
        settings: Settings,
        client: Client | None = None,
        sign: Sign | None = None,
        *,
        senders: int = SENDERS,
        sweep: float = SWEEP,
    ) -> None:
        self.store = store
        # No SMTP URL is a supported setup (development, demos): messages wait in the outbox.
        self.mailer = Mailer(settings.smtp_url, settings.mail_from) if settings.smtp_url else None
        self._client = client
        self._sign = sign
        self._senders = senders
        self._sweep = sweep
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}  # case number -> its send
        runtime = client.service_client.config.runtime if client is not None else None
        self._meter = (runtime or Runtime.default()).metric_meter

    def wake(self) -> None:
        """New messages are in the outbox (``record`` committed them)."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The relay, for as long as the block runs (the worker's run context)."""
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            sends = list(self._busy.values())
            for send in sends:
                send.cancel()
            await asyncio.gather(task, *sends, return_exceptions=True)

    async def run(self) -> None:
        if self.mailer is None:
            return
        while True:
            self._wake.clear()
            try:
                wait = await self.send_due()
            except Exception as err:  # the database away: look again at the next sweep
                log.warning("relay.look_failed", error=str(err))
                wait = self._sweep
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def send_due(self) -> float:
        """Start sending each case's next message if it is due and that case has none on the
        way; the seconds until the soonest one not due yet may be (at most ``SWEEP``)."""
        now = datetime.now(UTC)
        wait = self._sweep
        for entry in await self.store.outbox_heads(HEADS):
            if entry.case_number in self._busy:
                continue
            due = entry.next_attempt_at
            if entry.unconfirmed:
                due = max(due or entry.created_at, entry.created_at + CONFIRM_FIRST)
            if due is not None and due > now:
                wait = min(wait, max((due - now).total_seconds(), 0.05))
                continue
            if len(self._busy) >= self._senders:
                break  # a send that ends wakes the relay
            task = asyncio.create_task(self._send(entry))
            self._busy[entry.case_number] = task
            task.add_done_callback(functools.partial(self._done, entry.case_number))
        return wait

    async def settle(self) -> None:
        """Send everything that is due now, and what that makes due (each case's next message),
        until nothing is: one relay's work without its clock (the tests, a script)."""
        while True:
            await self.send_due()
            if not self._busy:
                return
            await asyncio.gather(*self._busy.values(), return_exceptions=True)

    def _done(self, case_number: str, _: object) -> None:
        self._busy.pop(case_number, None)
        self._wake.set()  # the case's next message, or another case's

    async def _send(self, head: OutboxEntry) -> None:
        bound = log.bind(
            case_number=head.case_number,
            workflow_id=case_workflow_id(head.case_number),
            key=head.key,
            template=head.template,
        )
        try:
            now = datetime.now(UTC)
            if not await self.store.outbox_take(head.key, now, now + LEASE):
                return  # another relay took it, or it changed since it was read
            entry = await self.store.outbox_entry(head.key)
            if entry is None or entry.sent_at is not None or entry.undelivered_at is not None:
                return
            if entry.unconfirmed and not await self._kept(entry, bound):
                return
            renewing = asyncio.create_task(self._renew(entry.key))
            try:
                await self._deliver(entry, bound.bind(attempt=entry.attempts + 1))
            finally:
                renewing.cancel()
        except Exception as err:  # the database away: the lease lapses and it is tried again
            bound.warning("relay.send_failed", error=f"{type(err).__name__}: {err}")

    async def _kept(self, entry: OutboxEntry, bound: structlog.BoundLogger) -> bool:
        """Whether the case kept ``entry`` (its recording task completed): then it is marked so
        with the task's other messages. A lost task's messages are dropped; one not ended yet is
        looked at again later."""
        assert entry.run_id is not None and entry.task_id is not None and entry.task_at
        if self._client is None:
            return True  # no server to ask (the mail path on its own): what was recorded goes
        wid = case_workflow_id(entry.case_number)
        try:
            kept = await task_completed(
                self._client, wid, entry.run_id, entry.task_id, entry.task_at
            )
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:  # the server away: looked at again
                bound.warning("notify.task_unread", error=str(err))
                await self.store.outbox_lease(entry.key, datetime.now(UTC) + RETRY_FIRST)
                return False
            # The run is gone from the server (past retention): sent rather than lost.
            bound.warning("notify.task_unknown", run_id=entry.run_id, task_id=entry.task_id)
            kept = True
        now = datetime.now(UTC)
        if kept is None:
            age = now - entry.created_at
            again = min(max(age, CONFIRM_FIRST), timedelta(seconds=self._sweep))
            await self.store.outbox_lease(entry.key, now + again)
            return False
        if not kept:
            dropped = await self.store.outbox_void(entry)
            bound.warning(
                "notify.dropped_lost_task",
                run_id=entry.run_id,
                task_id=entry.task_id,
                messages=dropped,
            )
            return False
        await self.store.outbox_confirm(entry, now)
        return True

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            with contextlib.suppress(Exception):
                await self.store.outbox_lease(key, datetime.now(UTC) + LEASE)

    async def _deliver(self, entry: OutboxEntry, bound: structlog.BoundLogger) -> None:
        assert self.mailer is not None
        if entry.in_doubt:
            count(self._meter, "resent_in_doubt", entry.template)
            bound.warning("notify.resend_in_doubt", handed_at=str(entry.handed_at))
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
            await self._tell_case(entry, refused.reason, bound)
            await self.store.outbox_undelivered(entry.key, datetime.now(UTC), refused.reason)
            count(self._meter, "undelivered", entry.template)
            bound.warning("notify.undelivered", to=entry.recipient, reason=refused.reason)
            return
        except Exception as err:
            delay = retry_delay(entry.attempts + 1)
            retry_at = datetime.now(UTC) + delay
            # Logged at the failure's instant, before the write: the line times the back-off.
            bound.warning(
                "notify.failed",
                to=entry.recipient,
                error=str(err),
                retry_in_s=delay.total_seconds(),
            )
            count(self._meter, "failed", entry.template)
            await self.store.outbox_failed(entry.key, f"{type(err).__name__}: {err}", retry_at)
            return
        await self._record_sent(entry.key, datetime.now(UTC), bound)
        count(self._meter, "sent", entry.template)
        bound.info("notify.sent", to=entry.recipient, message_id=entry.message_id)

    async def _record_sent(self, key: str, at: datetime, bound: structlog.BoundLogger) -> None:
        """Mark the message sent, waiting out a database that is away: unmarked, it would be
        sent a second time (a database cut for ten seconds under thirty cases doubled three
        emails of 108 when this gave up at once)."""
        give_up = time.monotonic() + RECORD_SENT_PATIENCE
        delay = 0.5
        while True:
            try:
                await self.store.outbox_sent(key, at)
                return
            except Exception as err:
                if time.monotonic() + delay > give_up:
                    raise
                bound.warning("notify.record_sent_retry", error=str(err), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _tell_case(
        self, entry: OutboxEntry, reason: str, bound: structlog.BoundLogger
    ) -> None:
        """Signal the case that its message was refused for good (before the row says so: a
        relay that dies in between refuses it again and tells again; the case keeps it once)."""
        if self._client is None:
            return
        wid = case_workflow_id(entry.case_number)
        event = MailUndelivered(key=entry.key, template=entry.template, reason=reason[:2_000])
        for attempt in range(1, TELL_ATTEMPTS + 1):
            try:
                await self._client.get_workflow_handle(wid).signal(
                    HandlerName.MAIL_UNDELIVERED, signed(self._sign, wid, event, RELAY_ACTOR)
                )
                return
            except RPCError as err:
                if err.status is RPCStatusCode.NOT_FOUND:
                    return  # the case has closed: the outbox and the metric keep it
                bound.warning("notify.tell_case_failed", error=str(err), attempt=attempt)
                await asyncio.sleep(attempt)
