"""``python -m starter demo``: a handful of cases whose deadlines are minutes, to watch live.

Within about five minutes the Web UI shows a reminder, a release shipping, work-plan reviews,
Closing and Closed. ``docs/screenshot.py`` opens its cases with the same actors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from starter.client import CaseClient
from starter.output import out
from starter.render import render_demo
from workflows.contract import (
    Actor,
    CaseInput,
    CustomerReply,
    DeadlinePolicy,
    Priority,
    ReleaseInput,
    Role,
    Status,
    TierHandoff,
    TransitionRequest,
)

# Deadlines in minutes: within about five minutes a demo shows reminders, Closing and Closed.
DEMO_POLICY = DeadlinePolicy(
    pcr_reminder="1min",
    pcr_closing="2min",
    closing_closed="1min",
    work_plan_review="1min",
    work_plan_expiry="3min",
    release_closing="1min",
    testing_closed="3min",
)

TIER1 = Actor(role=Role.TIER1, name="Tom One")
TIER2 = Actor(role=Role.TIER2, name="Tess Two")
DEV = Actor(role=Role.DEVELOPMENT, name="Dev Eloper")


def customer_of(institution: str) -> Actor:
    return Actor(role=Role.CUSTOMER, name="Ann Reader", institution=institution)


def demo_case(
    number: str,
    institution: str,
    priority: Priority,
    title: str,
    opened_by: Actor,
    policy: DeadlinePolicy | None = None,
) -> CaseInput:
    """A case of the demo's product, its contact an address of its own."""
    return CaseInput(
        case_number=number,
        institution=institution,
        product="Alma",
        priority=priority,
        title=title,
        contact_email=f"contact-{number}@example.org",
        opened_by=opened_by,
        policy=policy,
    )


# (institution, title, priority, story): each story leaves its case in another kind of wait.
DEMO_STORIES: list[tuple[str, str, Priority, str]] = [
    ("Alma University", "Loans report shows wrong totals", Priority.NORMAL, "pcr"),
    ("Borealis College", "Login page times out", Priority.HIGH, "resolved"),
    ("Cedar Library", "Fine calculation off by one day", Priority.NORMAL, "release"),
    ("Dunmore Institute", "Add a due-date column to the export", Priority.LOW, "work_plan"),
    ("Elm State University", "Import fails on UTF-8 titles", Priority.NORMAL, "replied"),
    ("Fjord Academy", "Search index out of date", Priority.CRITICAL, "tier2"),
]
DEMO_TALES = {
    "pcr": "Pending Customer Response: reminder in 1 min, Closing in 2, Closed in 3",
    "resolved": "Closing: Closed in 1 min",
    "release": "Pending Release: the release ships in 1 min, Closing 1 min later, then Closed",
    "work_plan": "Pending Work Plan: a review each minute, Closing in 3 min, then Closed",
    "replied": "the customer replied: Waiting for Process (no deadline)",
    "tier2": "Tier 2 W4I: Tier 2 waits for Tier 1 (no deadline)",
}

# Statuses of the demo that still have a deadline ahead: the watch ends when none is left.
TIMED = {
    Status.PENDING_CUSTOMER_RESPONSE,
    Status.CLOSING,
    Status.PENDING_RELEASE,
    Status.PENDING_WORK_PLAN,
    Status.PENDING_CUSTOMER_TESTING,
}

# Awaits one event of a case (case number, the client's call); the command line bounds the wait.
Answer = Callable[[str, Coroutine[Any, Any, Any]], Awaitable[Any]]


async def open_demo(cases: CaseClient, answer: Answer) -> tuple[list[tuple[str, str]], str]:
    """Open the demo's cases and walk each into its story; (case number, tale) each, and the
    prefix of their case numbers."""
    prefix = f"{int(datetime.now(UTC).timestamp()) % 1_000_000:06d}"
    release = f"demo-{prefix}"
    await cases.schedule_release(
        ReleaseInput(release_id=release, ships_at=datetime.now(UTC) + timedelta(minutes=1))
    )
    opened: list[tuple[str, str]] = []
    for i, (institution, title, priority, story) in enumerate(DEMO_STORIES, start=1):
        number = f"{prefix}{i:02d}"
        # Staff set a policy at open (a customer's would be ignored: defaults apply).
        await cases.open(demo_case(number, institution, priority, title, TIER1, DEMO_POLICY))

        async def to(status: Status, actor: Actor, number: str = number, **kw: Any) -> None:
            request = TransitionRequest(to=status, actor=actor, **kw)
            await answer(number, cases.transition(number, request))

        async def handoff(reason: str, number: str = number) -> None:
            event = TierHandoff(to_tier=2, reason=reason, actor=TIER1)
            await answer(number, cases.handoff(number, event))

        await to(Status.TIER1_ANALYSIS, TIER1)
        match story:
            case "pcr":
                await to(Status.PENDING_CUSTOMER_RESPONSE, TIER1, note="please send the report")
            case "resolved":
                await to(Status.CLOSING, TIER1, note="cleared the session cache")
            case "release":
                await handoff("defect_verification")
                await to(Status.TIER2_ANALYSIS, TIER2)
                await to(Status.DEVELOPMENT, TIER2)
                # The Support analyst that owns the case sets Pending Release (Tier 2 here).
                await to(Status.PENDING_RELEASE, TIER2, release_id=release)
            case "work_plan":
                await handoff("consult")
                await to(Status.TIER2_ANALYSIS, TIER2)
                await to(Status.DEVELOPMENT, TIER2)
                # Development decides that an enhancement waits for a work plan.
                await to(Status.PENDING_WORK_PLAN, DEV, note="enhancement for a work plan")
            case "replied":
                await to(Status.PENDING_CUSTOMER_RESPONSE, TIER1)
                reply = CustomerReply(
                    text="Here is the file that fails.", actor=customer_of(institution)
                )
                await answer(number, cases.reply(number, reply))
            case "tier2":
                await handoff("deeper_analysis")
                await to(Status.TIER2_ANALYSIS, TIER2)
                await to(Status.TIER2_W4I, TIER2, note="which index profile is used?")
        opened.append((number, DEMO_TALES[story]))
    return opened, prefix


async def watch_demo(cases: CaseClient, query: str) -> None:
    """A live table of the cases ``query`` finds, until none has a deadline ahead."""
    from rich.live import Live

    with Live(console=out(), refresh_per_second=1) as live:
        while True:
            rows = [row async for row in cases.find(query=query)]
            live.update(render_demo(rows))
            open_ones = [row for row in rows if row.status != Status.CLOSED]
            if rows and all(row.status not in TIMED for row in open_ones):
                return
            await asyncio.sleep(2)
