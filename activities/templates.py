"""Subject and plain-text body of every message the lifecycle sends. Pure functions.

``facts`` comes from the workflow (title, status, institution, product, release_id, closes_at,
text, review_number, ...). A missing fact gets a neutral wording rather than an error: a
message must still go out if an older workflow run sends fewer facts than this code expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workflows.contract import MessageTemplate

Facts = Mapping[str, Any]


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


_SIGNATURE = "\n\n-- \nSupport\n(An automatic message about your support case.)\n"


def render(template: MessageTemplate, case_number: str, facts: Facts) -> Rendered:
    subject, body = _TEMPLATES[MessageTemplate(template)](case_number, facts)
    title = _fact(facts, "title")
    prefix = f"[Case {case_number}]"
    subject = f"{prefix} {subject}" + (f": {title}" if title else "")
    return Rendered(subject=_one_line(subject), body=body.rstrip() + _SIGNATURE)


def _fact(facts: Facts, name: str) -> str | None:
    value = facts.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _one_line(text: str) -> str:
    # A title with a newline must not be able to inject further mail headers.
    return " ".join(text.split())


def _instant(value: Any) -> str | None:
    """An ISO instant (or datetime) as a reader-friendly UTC time; other text as it is."""
    if value is None or value == "":
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return f"{moment:%A} {moment.day} {moment:%B %Y, %H:%M} UTC"


def _closes(facts: Facts) -> str:
    """When the case closes: the period of the case's policy and the date."""
    period = _fact(facts, "closes_in")
    at = _instant(facts.get("closes_at"))
    if period and at:
        return f"in {period} (on {at})"
    if at:
        return f"on {at}"
    return f"in {period or '14 days'}"


def _opened(case_number: str, facts: Facts) -> tuple[str, str]:
    what = " / ".join(filter(None, (_fact(facts, "product"), _fact(facts, "institution"))))
    return "case opened", (
        f"Your support case {case_number} has been opened"
        + (f" ({what})" if what else "")
        + ".\n\nWe will analyse it and come back to you. Please quote the case number in any "
        "correspondence about it."
    )


def _information_requested(case_number: str, facts: Facts) -> tuple[str, str]:
    return "information requested", (
        f"To continue working on case {case_number} we need more information from you.\n\n"
        # No durations here: a case may run a custom deadline policy; the reminder names dates.
        "Please reply through the customer portal. If we do not hear from you, we will send a "
        "reminder, and later move the case towards closing."
    )


def _reminder(case_number: str, facts: Facts) -> tuple[str, str]:
    closes = _instant(facts.get("closes_at"))
    when = f" on {closes}" if closes else ""
    return "reminder: we are waiting for your answer", (
        f"Case {case_number} is still waiting for the information we asked for.\n\n"
        f"Without an answer the case will move to closing{when}. Please reply through the "
        "customer portal to keep it open."
    )


def _pending_release(case_number: str, facts: Facts) -> tuple[str, str]:
    release = _fact(facts, "release_id")
    into = f"release {release}" if release else "a future release"
    return f"fix planned for {into}", (
        f"The fix for case {case_number} is included in {into}.\n\n"
        "We will let you know as soon as it ships; the case stays open until then."
    )


def _release_shipped(case_number: str, facts: Facts) -> tuple[str, str]:
    release = _fact(facts, "release_id")
    name = f"release {release}" if release else "the release with your fix"
    return f"{name} has shipped", (
        f"The fix for case {case_number} has shipped in {name}.\n\n"
        "Please install it and let us know whether it solves the problem. If we do not hear "
        "from you, the case will move towards closing."
    )


def _closing(case_number: str, facts: Facts) -> tuple[str, str]:
    return "case closing", (
        f"We believe case {case_number} has been answered.\n\n"
        f"The case will close {_closes(facts)} unless you comment on it before then. To keep it "
        "open, simply reply through the customer portal."
    )


def _closed(case_number: str, facts: Facts) -> tuple[str, str]:
    return "case closed", (
        f"Case {case_number} is now closed.\n\n"
        "A closed case cannot be reopened. If the problem comes back, please open a new case "
        f"and reference case {case_number} in it."
    )


def _customer_comment(case_number: str, facts: Facts) -> tuple[str, str]:
    status = _fact(facts, "status")
    text = facts.get("text")
    comment = str(text).strip() if text else "(no text)"
    quoted = "\n".join(f"> {line}" for line in comment.splitlines() or [comment])
    tier = facts.get("owner_tier")
    return "customer comment", (
        (f"To Tier {tier}:\n\n" if tier else "")
        + f"The customer commented on case {case_number}"
        + (f"; the case is now in '{status}'" if status else "")
        + ".\n\n"
        + quoted
    )


def _work_plan_review(case_number: str, facts: Facts) -> tuple[str, str]:
    number = facts.get("review_number")
    which = f"reassessment #{number}" if number is not None else "reassessment"
    return f"work-plan {which} due", (
        "To Support and Development:\n\n"
        f"Case {case_number} is in 'Pending Work Plan'; its periodic {which} is due. Please "
        "review whether the defect should now be planned for development, or closed."
    )


_TEMPLATES: dict[MessageTemplate, Callable[[str, Facts], tuple[str, str]]] = {
    MessageTemplate.OPENED: _opened,
    MessageTemplate.INFORMATION_REQUESTED: _information_requested,
    MessageTemplate.REMINDER: _reminder,
    MessageTemplate.PENDING_RELEASE: _pending_release,
    MessageTemplate.RELEASE_SHIPPED: _release_shipped,
    MessageTemplate.CLOSING: _closing,
    MessageTemplate.CLOSED: _closed,
    MessageTemplate.CUSTOMER_COMMENT: _customer_comment,
    MessageTemplate.WORK_PLAN_REVIEW: _work_plan_review,
}
