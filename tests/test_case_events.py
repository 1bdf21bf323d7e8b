"""Events from other systems: duplicates are ignored, bad ones are recorded and refused, the case
goes on unharmed, and ops can find every case by its search attributes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RawValue

from starter.client import CaseRejected
from tests.scenario import CUSTOMER, TIER1, Case
from workflows.contract import Actor, CustomerReply, TransitionRequest


async def test_a_duplicate_event_id_has_one_effect(
    env, case_worker, worker_settings, inbox, unique
):
    case = await Case(env, worker_settings.task_queue, unique("dup")).open()
    await case.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    reply = CustomerReply(text="Logs attached.", actor=CUSTOMER, event_id="portal-msg-17")
    await case.client.signal(case.number, "customer_reply", reply)
    await case.client.signal(case.number, "customer_reply", reply)
    snap = await case.client.reply(case.number, reply)  # the update answers, changing nothing
    assert snap.status == "Waiting for Process"
    await case.to("Tier 1 Analysis", TIER1)
    await case.to("Pending Customer Response", TIER1)
    await case.client.signal(case.number, "customer_reply", reply)  # seen before: still ignored
    snap = await case.settle(0.5)
    assert snap.status == "Pending Customer Response"
    assert [str(h.to_status) for h in snap.history].count("Waiting for Process") == 1
    await inbox.wait_for(Subject="comment")
    await asyncio.sleep(0.5)
    assert len(inbox.matching(Subject="comment")) == 1


async def test_sixty_long_comments_in_a_burst_go_out_in_bounded_batches(
    env, case_worker, worker_settings, inbox, unique
):
    # A customer's system pastes a long log sixty times: 570 KB of emails to record at once,
    # more than Temporal likes in one payload (it warns above 512 KB, refuses above 2 MB), so
    # they are recorded in batches of at most EFFECT_BATCH_BYTES and no event gets near it.
    case = await Case(env, worker_settings.task_queue, unique("logs")).open()
    await case.to("Tier 1 Analysis", TIER1)
    log = "ERROR loans.export: totals differ by the renewals of the last day\n" * 140
    assert 9_000 < len(log) <= 10_000  # the longest comment a reply may carry
    for n in range(60):
        reply = CustomerReply(text=log, actor=CUSTOMER, event_id=f"portal-{n}")
        await case.client.signal(case.number, "customer_reply", reply)

    for _ in range(300):
        if len(inbox.matching(Subject="comment")) >= 60:
            break
        await asyncio.sleep(0.1)
    assert len(inbox.matching(Subject="comment")) == 60
    events = [e async for e in case.handle.fetch_history_events()]
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert max(e.ByteSize() for e in events) < 64 * 1024  # a comment, not a batch of them
    assert len([m for m in inbox.messages if "comment" in str(m.message["Subject"])]) == 60


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


async def test_malformed_and_forbidden_signals_are_recorded_and_the_case_goes_on(
    env, case_worker, worker_settings, unique
):
    case = await Case(env, worker_settings.task_queue, unique("bad")).open()
    await case.to("Tier 1 Analysis", TIER1)
    handle = case.client.handle(case.number)
    intruder = Actor(role="customer", name="Eve", institution="Other College")
    await handle.signal("transition", raw(b"{not json"))
    await handle.signal("transition", raw(b"\x00\xff", b"binary/plain"))
    await handle.signal("transition", raw(b'["a", "list"]'))
    await handle.signal("transition", {"to": "Nowhere", "actor": TIER1.model_dump()})
    await handle.signal("transition", args=[{"to": "Closing"}, {"extra": 1}])
    await handle.signal("reopen_everything", {"please": True})
    await handle.signal("transition", TransitionRequest(to="Development", actor=TIER1))
    await handle.signal(
        "transition", TransitionRequest(to="Closing", actor=Actor(role="system", name="me"))
    )
    await handle.signal("customer_reply", CustomerReply(text="hi", actor=intruder))
    await handle.signal("transition", raw(b'{"to": "Closing", "pad": "' + b"x" * 70_000 + b'"}'))

    snap = await case.wait(lambda s: len(s.rejected) == 10)
    reasons = [r.reason for r in snap.rejected]
    assert reasons == [
        "malformed",
        "malformed",
        "malformed",
        "malformed",
        "malformed",
        "malformed",
        "not_allowed",
        "forged_system",
        "wrong_institution",
        "malformed",
    ]
    messages = " | ".join(r.message for r in snap.rejected)
    for expected in (
        "not valid JSON",
        "json/plain",
        "JSON object",
        "to:",
        "exactly one",
        "unknown signal",
        "limit",
    ):
        assert expected in messages
    assert snap.status == "Tier 1 Analysis"
    assert len(snap.rejected[-1].excerpt or "") <= 200  # a huge payload is not stored

    failed = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == []
    assert (await case.to("Closing", TIER1)).status == "Closing"


async def test_rejected_updates_answer_with_a_clear_reason(
    env, case_worker, worker_settings, unique
):
    case = await Case(env, worker_settings.task_queue, unique("upd")).open()
    with pytest.raises(CaseRejected) as rejected:
        await case.to("Development", TIER1)
    assert str(rejected.value).startswith(
        f"case {case.number} is in New; transition to Development"
    )
    assert rejected.value.reason == "not_allowed"

    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await case.client.handle(case.number).execute_update("transition", raw(b"{not json"))
    assert "not valid JSON" in str(failed.value.cause)
    with pytest.raises(CaseRejected, match="institution"):
        await case.reply(
            "me too", actor=Actor(role="customer", name="Eve", institution="Other College")
        )


async def test_a_closed_case_says_to_open_a_new_one(env, case_worker, worker_settings, unique):
    case = await Case(env, worker_settings.task_queue, unique("final")).open()
    await case.walk(("Tier 1 Analysis", TIER1), ("Closing", TIER1), ("Closed", CUSTOMER))
    result = await case.handle.result()
    assert result.status == "Closed"
    with pytest.raises(Exception, match=r"completed|closed"):
        await case.to("Tier 1 Analysis", TIER1)


async def test_ops_find_cases_by_search_attributes(env, case_worker, worker_settings, unique):
    institution = unique("Ostrava Library")
    a = await Case(env, worker_settings.task_queue, unique("sa-a")).open(
        institution=institution, opened_by=TIER1
    )
    b = await Case(env, worker_settings.task_queue, unique("sa-b")).open(
        institution=institution, priority="high", opened_by=TIER1
    )
    await a.walk(("Tier 1 Analysis", TIER1), ("Pending Customer Response", TIER1))
    await b.to("Tier 1 Analysis", TIER1)

    async def ids(query: str) -> set[str]:
        return {row.case_number async for row in a.client.find(query=query)}

    query = f'CaseInstitution = "{institution}" AND CaseStatus = "Pending Customer Response"'
    for _ in range(100):  # visibility is eventually consistent
        if await ids(query) == {a.number}:
            break
        await asyncio.sleep(0.1)
    assert await ids(query) == {a.number}
    assert await ids(f'CaseInstitution = "{institution}" AND CasePriority = "high"') == {b.number}
    snap = await a.snapshot()
    assert snap.next_deadline is not None
    deadline = (snap.next_deadline.at + timedelta(seconds=1)).isoformat()
    assert await ids(f'CaseInstitution = "{institution}" AND CaseNextDeadline <= "{deadline}"') == {
        a.number
    }
    described = await a.client.handle(a.number).describe()
    attrs = described.typed_search_attributes
    assert {p.key.name: p.value for p in attrs}["CaseOwnerTier"] == "1"


async def test_a_case_started_with_bad_input_fails_with_the_reason(
    env, case_worker, worker_settings, unique
):
    handle = await env.client.start_workflow(
        "SupportCase",
        {"case_number": "no spaces allowed", "institution": "Alma"},
        id=unique("case-bad-input"),
        task_queue=worker_settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "invalid case input" in message and "case_number" in message and "product" in message
