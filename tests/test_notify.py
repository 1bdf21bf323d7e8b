"""Notifications through a real SMTP server: a case's ``record`` writes each message into the
outbox once, and the worker's mail relay sends it once, kept when there is no server, retried
after a failure, a case's messages in order. Plus the templates and the SMTP settings they rely
on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities.case_activities import CaseActivities
from activities.mailer import SmtpServer, message_id, permanent_refusal
from activities.migrate import upgrade
from activities.relay import MailRelay, retry_delay
from activities.store import CaseStore, outbox
from activities.templates import render
from settings import Settings
from workflows.contract import Actor, CaseInput, MessageTemplate, Notify, Record
from workflows.mailbox import one_mailbox

SUPPORT = "support-team@vendor.example"
CONTACT = "ann@alma.example"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CaseStore]:
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    await upgrade(url)
    store = CaseStore(url)
    yield store
    await store.dispose()


class Mail:
    """A worker's mail path without the workflow: its ``record`` and its relay."""

    def __init__(self, store: CaseStore, smtp_url: str | None) -> None:
        config = Settings(
            smtp_url=smtp_url,
            mail_from="Support <support-cases@vendor.example>",
            support_email=SUPPORT,
        )
        self.store = store
        self.relay = MailRelay(store, config)
        self.activities = CaseActivities(store, None, config, self.relay.wake)

    async def record(self, *requests: Notify) -> None:
        # Through Temporal's activity environment, as a worker runs the local activity.
        await ActivityEnvironment().run(self.activities.record, Record(effects=list(requests)))

    async def send(self, *requests: Notify) -> None:
        """Record, then let the relay send what is due."""
        await self.record(*requests)
        await self.relay.settle()

    async def due_now(self, key: str) -> None:
        """The message's back-off has passed."""
        async with self.store.engine.begin() as conn:
            await conn.execute(
                outbox.update().where(outbox.c.key == key).values(next_attempt_at=None)
            )


@pytest.fixture
def mail(store: CaseStore) -> Callable[[str | None], Mail]:
    return lambda smtp_url: Mail(store, smtp_url)


def request(
    template: MessageTemplate = MessageTemplate.REMINDER,
    recipient: Literal["contact", "support"] = "contact",
    seq: int = 17,
    case_number: str | None = None,
    **facts: Any,
) -> Notify:
    number = case_number or f"T-{uuid.uuid4().hex[:10]}"
    return Notify(
        key=f"case-{number}:{seq}:notify:{template}",
        seq=seq,
        template=template,
        recipient=recipient,
        contact_email=CONTACT,
        case_number=number,
        facts={"title": "Loans report shows wrong totals", "status": "Tier 1 Analysis", **facts},
    )


# ---- sending --------------------------------------------------------------------------------


async def test_a_message_arrives_once_with_its_key_as_message_id(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    req = request(closes_at="2026-04-02T10:00:00+00:00")

    await worker.send(req)
    await worker.relay.settle()  # nothing more to send

    [received] = smtp_server.messages
    message = received.message
    assert message["Message-ID"] == f"<case-{req.case_number}.17.notify.reminder@support-cases>"
    assert message["To"] == CONTACT and received.rcpt_tos == [CONTACT]
    assert message["Subject"] == (
        f"[Case {req.case_number}] reminder: we are waiting for your answer: "
        "Loans report shows wrong totals"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert "Thursday 2 April 2026, 10:00 UTC" in message.get_content()
    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.sent_at is not None and entry.attempts == 1


async def test_a_retried_record_sends_only_once(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.CLOSED)

    for _ in range(3):  # the local activity retried after its commit, say
        await worker.send(req)

    assert len(smtp_server.messages) == 1
    assert len(await store.outbox(req.case_number)) == 1


async def test_support_messages_go_to_the_support_address(
    smtp_server: Any, mail: Callable[[str | None], Mail]
) -> None:
    worker = mail(smtp_server.url)
    await worker.send(
        request(MessageTemplate.CUSTOMER_COMMENT, "support", text="Still broken.\nSee log.")
    )

    [received] = smtp_server.messages
    assert received.rcpt_tos == [SUPPORT]
    assert "> Still broken.\n> See log." in received.message.get_content()


async def test_without_an_smtp_server_the_message_is_kept_in_the_outbox(
    mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(None)
    req = request(MessageTemplate.PENDING_RELEASE, release_id="2026.12")

    await worker.send(req)
    await worker.send(req)
    await asyncio.wait_for(worker.relay.run(), 5)  # without a server it has nothing to do

    [entry] = await store.outbox(req.case_number, pending_only=True)
    assert entry.key == req.key and entry.recipient == CONTACT
    assert "release 2026.12" in entry.subject and "2026.12" in entry.body
    assert entry.message_id == message_id(req.key)


async def test_a_failed_send_is_recorded_backed_off_and_later_sent_once(
    smtp_sinks: Callable[..., Any],
    unused_port: int,
    mail: Callable[[str | None], Mail],
    store: CaseStore,
) -> None:
    port = unused_port  # the mail server is down
    worker = mail(f"smtp://127.0.0.1:{port}")
    req = request(MessageTemplate.OPENED)

    before = datetime.now(UTC)
    await worker.send(req)
    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.sent_at is None
    assert entry.attempts == 1 and entry.last_error and "Connect" in entry.last_error
    assert entry.next_attempt_at is not None
    assert entry.next_attempt_at >= before + retry_delay(1) == before + timedelta(seconds=5)

    sink = smtp_sinks(port=port)  # the server comes back
    await worker.relay.settle()
    assert sink.messages == [], "not before its back-off has passed"
    await worker.due_now(req.key)
    await worker.relay.settle()
    await worker.relay.settle()

    assert len(sink.messages) == 1
    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.sent_at is not None
    assert (entry.attempts, entry.last_error) == (2, None)
    assert entry.resent_in_doubt == 0, "a refused send is not in doubt"


def test_the_back_off_doubles_from_five_seconds_to_ten_minutes() -> None:
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        320,
        600,
        600,
    ]


async def test_a_send_cut_by_a_dead_worker_is_resent_and_the_possible_duplicate_recorded(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.CLOSING)
    # What a worker killed (kill -9) mid-hand-over leaves: the row, handed to SMTP, not sent;
    # its lease lapses.
    await worker.send(req)
    async with store.engine.begin() as conn:
        await conn.execute(outbox.update().values(sent_at=None, next_attempt_at=None))
    assert (entry := await store.outbox_entry(req.key)) is not None and entry.in_doubt

    await worker.relay.settle()  # better twice than never

    assert [m.message["Message-ID"] for m in smtp_server.messages] == [message_id(req.key)] * 2
    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.sent_at is not None and not entry.in_doubt
    assert entry.resent_in_doubt == 1


async def test_a_message_another_relay_holds_is_left_to_it(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.OPENED)
    await worker.record(req)
    now = datetime.now(UTC)
    assert await store.outbox_take(req.key, now, now + timedelta(minutes=1))  # the other's lease

    await worker.relay.settle()
    assert smtp_server.messages == []
    assert not await store.outbox_take(req.key, now, now + timedelta(minutes=1))


async def test_two_relays_on_one_outbox_send_each_message_once(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    first, second = mail(smtp_server.url), mail(smtp_server.url)
    requests = [request(MessageTemplate.OPENED, seq=n) for n in range(30)]
    await first.record(*requests)

    await asyncio.gather(first.relay.settle(), second.relay.settle())
    await asyncio.gather(first.relay.settle(), second.relay.settle())

    ids = sorted(str(m.message["Message-ID"]) for m in smtp_server.messages)
    assert ids == sorted(message_id(r.key) for r in requests)


def test_the_worker_registers_the_activities_by_their_wire_names(
    mail: Callable[[str | None], Mail],
) -> None:
    names = {
        activity._Definition.must_from_callable(fn).name
        for fn in mail(None).activities.activities()
    }
    assert names == {"record", "policy_settings", "release_backlog_add", "release_backlog_load"}


async def test_a_case_s_messages_go_in_order_and_a_stalled_one_holds_no_other_case(
    smtp_server: Any, mail: Callable[[str | None], Mail]
) -> None:
    worker = mail(smtp_server.url)
    number = f"T-{uuid.uuid4().hex[:10]}"
    stalled = request(MessageTemplate.OPENED, seq=1, case_number=number).model_copy(
        update={"contact_email": "slow@alma.example"}
    )
    after = request(MessageTemplate.INFORMATION_REQUESTED, seq=2, case_number=number)
    other = request(MessageTemplate.OPENED)
    smtp_server.hold("slow@alma.example")
    await worker.record(stalled, after)
    await worker.record(other)

    sending = asyncio.create_task(worker.relay.settle())

    async def other_arrives() -> None:
        while not smtp_server.messages:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(other_arrives(), 10)
    assert [m.rcpt_tos for m in smtp_server.messages] == [[CONTACT]]  # the other case's
    smtp_server.release()
    await asyncio.wait_for(sending, 20)
    await worker.relay.settle()
    subjects = [str(m.message["Subject"]) for m in smtp_server.messages]
    assert len(subjects) == 3 and "information" in subjects[2].lower()
    assert smtp_server.messages[1].rcpt_tos == ["slow@alma.example"]


async def test_a_message_refused_once_is_sent_on_its_retry_and_the_others_once(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    first, second = request(MessageTemplate.OPENED), request(MessageTemplate.CLOSING)
    # The mail server refuses the second message's recipient once (a full mailbox, say).
    refused = second.model_copy(update={"contact_email": "full@alma.example"})
    smtp_server.refuse_once("full@alma.example")

    await worker.send(first, refused)
    entry = await store.outbox_entry(refused.key)
    assert (
        entry is not None
        and entry.sent_at is None
        and "full@alma.example" in (entry.last_error or "")
    )
    await worker.due_now(refused.key)
    await worker.relay.settle()

    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [CONTACT, "full@alma.example"]


# ---- mail that cannot be delivered ----------------------------------------------------------


async def test_a_recipient_refused_for_good_is_marked_undelivered_and_the_case_s_mail_goes_on(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    number = f"T-{uuid.uuid4().hex[:10]}"
    gone = request(MessageTemplate.OPENED, seq=1, case_number=number).model_copy(
        update={"contact_email": "gone@alma.example"}
    )
    after = request(MessageTemplate.CLOSING, seq=2, case_number=number)
    smtp_server.refuse_always("gone@alma.example", "550 5.1.1 <gone@alma.example>: no such user")

    await worker.send(gone, after)

    assert [m.rcpt_tos for m in smtp_server.messages] == [[CONTACT]]
    entry = await store.outbox_entry(gone.key)
    assert entry is not None and entry.sent_at is None and entry.undelivered_at is not None
    assert entry.undelivered_reason == "550 5.1.1 <gone@alma.example>: no such user"
    assert not entry.in_doubt
    assert await store.outbox(pending_only=True) == []

    # Recorded again (a retried record), it is neither asked of the server again nor sent.
    await worker.send(gone, after)
    assert smtp_server.refusals == ["gone@alma.example"]
    assert len(smtp_server.messages) == 1


async def test_a_refusal_for_now_is_still_retried(
    smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.OPENED)
    smtp_server.refuse_always(CONTACT, "451 4.3.0 Try again later")

    await worker.send(req)
    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.undelivered_at is None and "451" in (entry.last_error or "")
    assert entry.next_attempt_at is not None


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@x"), True),
        (aiosmtplib.SMTPRecipientRefused(452, "mailbox full", "a@x"), False),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(553, "no", "a")]), True),
        (aiosmtplib.SMTPDataError(554, "content rejected"), True),
        (aiosmtplib.SMTPDataError(451, "local error"), False),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server"), True),
        # The worker's own configuration, the same for every message: retried until fixed.
        (aiosmtplib.SMTPSenderRefused(550, "sender rejected", "s@x"), False),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), False),
        # Outages.
        (aiosmtplib.SMTPServerDisconnected("gone"), False),
        (aiosmtplib.SMTPConnectError("refused"), False),
        (aiosmtplib.SMTPReadTimeoutError("timed out"), False),
    ],
)
def test_which_answers_refuse_a_message_for_good(error: Exception, permanent: bool) -> None:
    assert (permanent_refusal(error) is not None) is permanent


@pytest.mark.parametrize(
    "contact",
    [
        "=?utf-8?q?a=40x.example=2C?=c@z.example",  # decodes to two addresses
        "a@x.example,b",  # a list
        "friends:a@x.example;",  # a group
    ],
)
async def test_a_message_goes_to_exactly_one_mailbox(
    contact: str, smtp_server: Any, mail: Callable[[str | None], Mail], store: CaseStore
) -> None:
    """A contact recorded before the open-time rule: never sent to several addresses."""
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.OPENED).model_copy(update={"contact_email": contact})

    await worker.send(req)

    entry = await store.outbox_entry(req.key)
    assert entry is not None and entry.undelivered_at is not None
    assert "one email address" in (entry.undelivered_reason or "")
    assert smtp_server.messages == []


async def test_the_one_recipient_is_passed_explicitly(
    smtp_server: Any, mail: Callable[[str | None], Mail]
) -> None:
    worker = mail(smtp_server.url)
    req = request(MessageTemplate.OPENED).model_copy(
        update={"contact_email": "Ann Reader <ann@alma.example>"}
    )

    await worker.send(req)

    [received] = smtp_server.messages
    assert received.rcpt_tos == [CONTACT]
    assert received.message["To"].addresses[0].addr_spec == CONTACT


@pytest.mark.parametrize(
    "contact",
    [
        "=?utf-8?q?a=40x.example=2C?=c@z.example",
        "a@x.example,b",
        "friends:a@x.example;",
    ],
)
def test_a_case_with_a_contact_of_several_addresses_is_refused_at_open(contact: str) -> None:
    with pytest.raises(ValidationError, match=r"(?s)contact_email.*one email address"):
        CaseInput(
            case_number="M-1",
            institution="Alma University",
            product="Alma",
            priority="normal",
            title="Loans report shows wrong totals",
            contact_email=contact,
            opened_by=Actor(role="tier1", name="Tom One"),
        )


@hypothesis_settings(max_examples=500, deadline=None)
@given(contact=st.text(max_size=60) | st.emails().map(lambda e: f"=?x?{e}"))
def test_any_contact_either_opens_or_is_refused_with_a_reason(contact: str) -> None:
    """The start input is validated inside the workflow: anything but a validation error would
    fail its workflow task."""
    try:
        case = CaseInput(
            case_number="M-1",
            institution="Alma University",
            product="Alma",
            priority="normal",
            title="Loans report shows wrong totals",
            contact_email=contact,
            opened_by=Actor(role="tier1", name="Tom One"),
        )
    except ValidationError:
        return
    assert one_mailbox(case.contact_email).addr_spec


# ---- message ids and SMTP settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("case-00123:17:notify:reminder", "<case-00123.17.notify.reminder@support-cases>"),
        ("case-A-1:3:notify:pending_release", "<case-A-1.3.notify.pending_release@support-cases>"),
        (":odd key::<>@[x]:", "<odd.key.x@support-cases>"),
    ],
)
def test_message_ids_are_valid_and_derived_from_the_key(key: str, expected: str) -> None:
    assert message_id(key) == expected


def test_smtp_urls() -> None:
    assert SmtpServer.from_url("smtp://127.0.0.1:1025") == SmtpServer("127.0.0.1", 1025, False)
    assert SmtpServer.from_url("smtps://bot:p%40ss@mail.example") == SmtpServer(
        "mail.example", 465, True, "bot", "p@ss"
    )
    assert SmtpServer.from_url("smtp://mail.example").port == 25
    with pytest.raises(ValueError, match="smtp://"):
        SmtpServer.from_url("http://mail.example")


# ---- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("template", list(MessageTemplate))
def test_every_template_renders_without_any_facts(template: MessageTemplate) -> None:
    rendered = render(template, "C-1", {})
    assert rendered.subject.startswith("[Case C-1] ")
    assert "C-1" in rendered.body


def test_templates_say_what_the_guide_asks_them_to() -> None:
    closing = render(MessageTemplate.CLOSING, "C-1", {"closes_at": "2026-05-15T08:00:00+00:00"})
    assert "close on Friday 15 May 2026, 08:00 UTC unless you comment" in closing.body
    assert "in 14 days" in render(MessageTemplate.CLOSING, "C-1", {}).body
    facts = {"closes_in": "3 days", "closes_at": "2026-05-15T08:00:00+00:00"}
    assert (
        "in 3 days (on Friday 15 May 2026, 08:00 UTC)"
        in render(MessageTemplate.CLOSING, "C-1", facts).body
    )
    closed = render(MessageTemplate.CLOSED, "C-1", {}).body
    assert "open a new case" in closed and "reference case C-1" in closed
    assert (
        "2026.12" in render(MessageTemplate.PENDING_RELEASE, "C-1", {"release_id": "2026.12"}).body
    )
    assert (
        "2026.12"
        in render(MessageTemplate.RELEASE_SHIPPED, "C-1", {"release_id": "2026.12"}).subject
    )
    review = render(MessageTemplate.WORK_PLAN_REVIEW, "C-1", {"review_number": 2})
    assert "reassessment #2" in review.subject and "Development" in review.body


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    template=st.sampled_from(list(MessageTemplate)),
    facts=st.dictionaries(
        st.sampled_from(["title", "status", "release_id", "closes_at", "text", "review_number"]),
        st.none() | st.text(max_size=40) | st.integers(),
        max_size=6,
    ),
)
def test_any_facts_render_to_a_single_line_subject(
    template: MessageTemplate, facts: dict[str, Any]
) -> None:
    rendered = render(template, "C-1", facts)
    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    assert rendered.body.strip()
