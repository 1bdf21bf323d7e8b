"""Mail the server refuses for good never blocks a case: the mail server answers 550 for a case's
contact, and a real worker process marks that message undelivered in the outbox with the
server's answer, counts it, shows it in the case's snapshot and in the UI's current details,
and sends the case's later messages. A contact naming several addresses is refused at open; a
made-up signal name is counted under the label ``unknown``. No workflow task fails on the way."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.mailer import message_id
from activities.store import CaseStore
from starter.client import CaseClient
from tests.conftest import free_port
from tests.reliability.harness import (
    CUSTOMER,
    TIER1,
    Plan,
    Tally,
    WorkerProcess,
    case_input,
    case_worker_environment,
    describe,
    failed_workflow_tasks,
    message_ids,
    reply,
    send_events,
    to,
    wait_until,
)
from workflows.contract import Snapshot, Status, case_workflow_id

ANSWER = "550 5.1.1 <{}>: Recipient address rejected: User unknown"


async def snapshot(client: Any, plan: Plan) -> Snapshot:
    return await client.get_workflow_handle(plan.workflow_id).query(
        "snapshot", result_type=Snapshot
    )


async def current_details(client: Any, plan: Plan) -> str:
    handle = client.get_workflow_handle(plan.workflow_id)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


def scrape(port: int) -> dict[str, float]:
    """``case_notifications_total`` by result."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "case_notifications_total":
                result = sample.labels["result"]
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts


async def test_a_message_refused_for_good_is_shown_and_the_case_goes_on(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    task_queue = unique("undelivered")
    metrics = free_port()
    worker = spawn_worker(
        case_worker_environment(
            env,
            task_queue,
            url,
            inbox,
            CASES_METRICS_PORT=str(metrics),
            CASES_SUPPORT_EMAIL="support-team@example.org",
        )
    )
    plan = Plan(case_input(unique("U")))
    contact = plan.case.contact_email
    inbox.refuse_always(contact, ANSWER.format(contact))
    await worker.ready()
    client = env.client

    # The "opened" email is refused for good: marked, shown, and the case is not held up.
    handle = await CaseClient(client, task_queue).open(plan.case)
    # Effect keys carry the run that opened the case (one case number, one case).
    prefix = f"case-{plan.number}:{handle.first_execution_run_id or handle.result_run_id}"
    opened_key = f"{prefix}:1:notify:opened"

    async def refused_shown() -> bool:
        return any(u.key == opened_key for u in (await snapshot(client, plan)).undelivered)

    await wait_until(refused_shown, 60, lambda: asyncio.sleep(0, worker.tail()))
    [undelivered] = (await snapshot(client, plan)).undelivered
    assert undelivered.template == "opened"
    assert undelivered.reason == ANSWER.format(contact)
    details = await current_details(client, plan)
    assert "undelivered email: 1" in details and "opened: 550 5.1.1" in details

    store = CaseStore(url)
    try:
        entry = await store.outbox_entry(opened_key)
        assert entry is not None and entry.sent_at is None and entry.undelivered_at is not None
        assert entry.undelivered_reason == ANSWER.format(contact)
    finally:
        await store.dispose()

    # The case's later messages go on: the information request (the mailbox exists again) and
    # the customer's comment to Support.
    inbox.refused_for_good.clear()
    plan.events = [
        to("Tier 1 Analysis", TIER1),
        to("Pending Customer Response", TIER1),
        reply("The log you asked for.", actor=CUSTOMER),
    ]
    await send_events(client, plan)
    later = {
        message_id(f"{prefix}:3:notify:information_requested"),
        message_id(f"{prefix}:4:notify:customer_comment"),
    }

    async def arrived() -> bool:
        return later <= set(message_ids(inbox.messages))

    await wait_until(arrived, 60, lambda: asyncio.sleep(0, f"{inbox.messages} {worker.tail()}"))
    snap = await snapshot(client, plan)
    assert snap.status is Status.WAITING_FOR_PROCESS
    assert [u.key for u in snap.undelivered] == [opened_key]

    received = message_ids(inbox.messages)
    assert message_id(opened_key) not in received
    assert inbox.refusals == [contact], "the refused message was not retried"
    assert await failed_workflow_tasks(client, plan.workflow_id) == []
    described = await describe(client, plan.workflow_id)
    assert described.pending_activities == 0, described.activity_problems

    counts = await asyncio.to_thread(scrape, metrics)
    assert counts.get("undelivered") == 1, counts
    assert counts.get("failed", 0) == 0, counts

    tally.cases = 1
    tally.messages_expected = len(later)
    tally.messages_received = sum(received.values())
    tally.duplicates = sum(n - 1 for n in received.values() if n > 1)
    tally.missing = len(later - set(received))
    tally.notes = "1 message refused with 550: undelivered, shown; later mail sent"


async def test_a_contact_naming_several_addresses_is_refused_at_open_and_nothing_is_sent(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    """Another system starts ``SupportCase`` itself (no client-side check) with a contact whose
    encoded-word decodes to two addresses: the run fails at once with the reason, no mail goes
    to either address, and no workflow task fails."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    task_queue = unique("one-mailbox")
    worker = spawn_worker(case_worker_environment(env, task_queue, url, inbox))
    number = unique("E")
    start = case_input(number).model_dump(mode="json")
    start["contact_email"] = "=?utf-8?q?victim=40elsewhere.example=2C?=ann@alma.example"
    await worker.ready()

    handle = await env.client.start_workflow(
        "SupportCase", start, id=case_workflow_id(number), task_queue=task_queue
    )
    try:
        await handle.result()
        raise AssertionError("the case opened with a contact of two addresses")
    except WorkflowFailureError as err:
        cause = err.cause
        assert isinstance(cause, ApplicationError) and cause.type == "InvalidCaseInput"
        assert "contact_email" in cause.message and "one email address" in cause.message

    assert inbox.messages == []
    assert await failed_workflow_tasks(env.client, handle.id) == []
    tally.cases = 1
    tally.notes = "contact with an encoded-word of two addresses: refused at open, 0 mails"


async def test_a_rejected_signal_of_any_name_is_counted_under_a_known_label(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    """Signal names are the sender's choice: a metric label per name would let any sender grow
    the worker's metrics without bound. Unknown names count as ``unknown``."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    task_queue = unique("labels")
    metrics = free_port()
    worker = spawn_worker(
        case_worker_environment(env, task_queue, url, inbox, CASES_METRICS_PORT=str(metrics))
    )
    plan = Plan(case_input(unique("L")))
    await worker.ready()
    await CaseClient(env.client, task_queue).open(plan.case)
    names = [f"made-up-{uuid.uuid4().hex}" for _ in range(3)]
    handle = env.client.get_workflow_handle(plan.workflow_id)
    for name in names:
        await handle.signal(name, {"to": "Closed"})
    await handle.signal("transition", {"to": "Nowhere"})

    async def all_rejected() -> bool:
        return len((await snapshot(env.client, plan)).rejected) == len(names) + 1

    await wait_until(all_rejected, 60, lambda: asyncio.sleep(0, worker.tail()))

    async def counted() -> bool:
        return sum((await asyncio.to_thread(rejections, metrics)).values()) == len(names) + 1

    async def seen() -> str:
        return str(await asyncio.to_thread(rejections, metrics))

    await wait_until(counted, 30, seen)
    labels = await asyncio.to_thread(rejections, metrics)
    assert labels == {"unknown": len(names), "transition": 1}, labels
    assert await failed_workflow_tasks(env.client, plan.workflow_id) == []
    tally.cases = 1
    tally.notes = f"{len(names)} made-up signal names counted as one label, 'unknown'"


def rejections(port: int) -> dict[str, float]:
    """``case_rejected_events_total`` by event label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "case_rejected_events_total":
                event = sample.labels["event"]
                counts[event] = counts.get(event, 0.0) + sample.value
    return counts


async def test_a_worker_given_smtp_credentials_without_tls_refuses_to_start(
    env: Any,
    inbox: Any,
    tmp_path: Any,
    spawn_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tally: Tally,
) -> None:
    """Credentials in ``CASES_SMTP_URL`` and a server that offers no STARTTLS: the password
    would cross the network in clear, so the worker says why and exits 1."""
    environment = case_worker_environment(
        env, unique("tls"), f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}", inbox
    )
    environment["CASES_SMTP_URL"] = f"smtp://bot:s3cret@127.0.0.1:{inbox.port}"
    worker = spawn_worker(environment)

    code = await asyncio.to_thread(worker.process.wait, 60)  # type: ignore[union-attr]

    assert code == 1, worker.tail()
    assert "offers no STARTTLS" in worker.output() and "smtps://" in worker.output()
    assert "s3cret" not in worker.output()
    assert "worker polling" not in worker.output()
    tally.notes = "credentials over smtp:// to a server without STARTTLS: exit 1, said why"
