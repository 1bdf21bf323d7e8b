"""Smaller holes an outsider finds: a visibility query that escapes the case filter, case text that
crashes or rewrites the terminal, a summary over the server's size limit, log lines whose message
an ``extra`` replaces or whose nested secrets show, SMTP credentials sent in clear, and a tail of
undelivered mail that grows without bound."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import logs
from activities.mailer import Mailer
from starter.client import BadQuery, CaseClient, case_summary
from tests.conftest import SmtpSink, free_port
from tests.reliability.harness import TIER1, case_input
from tests.test_cli import Cli, cli, cli_env  # noqa: F401 - fixtures
from workflows import lifecycle
from workflows.contract import (
    RELEASE_WORKFLOW,
    ReleaseInput,
    UndeliveredMessage,
    release_workflow_id,
)

# ---- visibility queries -----------------------------------------------------------------------


async def test_a_query_cannot_escape_the_case_filter(
    env: Any, unique: Callable[[str], str]
) -> None:
    """``x) OR (y`` closed the group the client put the query in: the release showed up as a
    case. Parentheses that do not balance outside string literals are refused."""
    release = unique("R")
    await env.client.start_workflow(
        RELEASE_WORKFLOW,
        ReleaseInput(release_id=release),
        id=release_workflow_id(release),
        task_queue=unique("no-worker"),
    )
    cases = CaseClient(env.client)
    escape = f'CaseStatus = "New") OR (WorkflowId = "{release_workflow_id(release)}"'

    with pytest.raises(BadQuery, match="no '\\('"):
        [row async for row in cases.find(query=escape)]
    for unbalanced in ['CaseStatus = "New"))', '(CaseStatus = "New"', 'CaseStatus = "New']:
        with pytest.raises(BadQuery):
            [row async for row in cases.find(query=unbalanced)]
    # Parentheses inside a string literal are text, not grouping.
    quoted = (
        f'WorkflowId = "{release_workflow_id(release)}) OR (x" OR (CaseStatus = "no such status")'
    )
    assert [row async for row in cases.find(query=quoted)] == []


# ---- the command line prints case text literally --------------------------------------------


async def test_show_prints_a_title_with_markup_and_control_characters_as_text(
    cli: Cli,  # noqa: F811
    unique: Callable[[str], str],
) -> None:
    number = unique("CLI")
    title = "[/bold] [red]fake[/red] \x1b[2J\x1b]0;owned\x07 report\u202e"
    await cli(
        "open", number, "--institution", "[bold]Alma", "--product", "Alma",
        "--title", title, "--contact", "ann@alma.example",
    )  # fmt: skip
    await cli("transition", number, "Tier 1 Analysis", "--note", "[/] see \x1b[31mred")

    shown = await cli("show", number)

    assert "[/bold] [red]fake[/red] [2J]0;owned report" in shown.stdout
    assert "[bold]Alma" in shown.stdout and "[/] see [31mred" in shown.stdout
    assert not any(c in shown.stdout for c in "\x1b\x07\u202e")
    listed = await cli("list", "--institution", "[bold]Alma", "--query", 'CaseStatus = "[/x]"')
    assert "[/x]" in listed.stdout
    refused = await cli("list", "--query", "x) OR (y", expect=2)
    assert "no '('" in refused.stderr


# ---- the workflow's summary stays within the server's limit -------------------------------


async def test_the_longest_title_opens_a_case_within_the_summary_limit(
    env: Any, unique: Callable[[str], str]
) -> None:
    """The server refuses a summary payload over 400 bytes (``limit.userMetadataSummarySize``)
    and details over 20,000; a 500-character title of four-byte characters, each escaped to
    twelve bytes by a JSON converter that writes ASCII, is 6,000."""
    case = case_input(
        unique("S"),
        title="🦀" * 500,
        institution="Universit\u00e9 \U0001f600" * 10,
        product='"\\' * 100,
        opened_by=TIER1,
    )
    assert len(json.dumps(case.title)) == 6_002

    handle = await CaseClient(env.client, unique("no-worker")).open(case)

    metadata = (await handle.describe()).raw_description.execution_config.user_metadata
    assert 0 < metadata.summary.ByteSize() <= 400
    assert 0 < metadata.details.ByteSize() <= 20_000
    summary = case_summary(case)
    assert summary.startswith(f"Case {case.case_number} · ") and summary.endswith("…")
    assert len(json.dumps(summary)) <= 240
    await handle.terminate("test done")


# ---- logs ---------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_an_extra_never_replaces_the_message_and_nested_secrets_are_masked(
    json_log: io.StringIO,
) -> None:
    logging.getLogger("temporalio.workflow").warning(
        "event rejected",
        extra={
            "event": "transition",
            "level": "debug",
            "connection": {"password": "hunter2", "urls": ["postgresql://u:s3cret@db/cases"]},
        },
    )
    structlog.get_logger().info(
        "connecting", config={"api_key": "k-123", "tls": {"client_private_key": "PEM"}}
    )

    first, second = (json.loads(line) for line in json_log.getvalue().splitlines())
    assert first["event"] == "event rejected" and first["level"] == "warning"
    assert first["extra_event"] == "transition" and first["extra_level"] == "debug"
    assert first["connection"] == {"password": "***", "urls": ["postgresql://u:***@db/cases"]}
    assert second["config"] == {"api_key": "***", "tls": {"client_private_key": "***"}}
    assert "hunter2" not in json_log.getvalue() and "s3cret" not in json_log.getvalue()


# ---- SMTP credentials travel only over TLS --------------------------------------------------


class _Authenticator:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        if isinstance(data, LoginPassword):
            self.seen.append(data.password.decode())
        return AuthResult(success=True)


@pytest.fixture
def plaintext_auth_server() -> Iterator[tuple[SmtpSink, _Authenticator]]:
    """An SMTP server that offers AUTH without TLS (no STARTTLS): credentials would go in
    clear."""
    sink = SmtpSink(free_port())
    authenticator = _Authenticator()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield sink, authenticator
    controller.stop()


async def test_smtp_credentials_are_never_sent_without_tls(
    plaintext_auth_server: tuple[SmtpSink, _Authenticator],
) -> None:
    sink, authenticator = plaintext_auth_server
    mailer = Mailer(f"smtp://bot:s3cret@127.0.0.1:{sink.port}", "Support <s@example.org>")
    message = mailer.build(
        to="ann@alma.example",
        subject="hello",
        body="hi",
        msg_id="<t@support-cases>",
        date=datetime.now(UTC),
    )

    with pytest.raises(Exception, match="STARTTLS"):
        await mailer.send(message, "ann@alma.example")

    assert authenticator.seen == [], "the password crossed the wire in clear"
    assert sink.messages == []
    # Without credentials a plain server is still fine (a local relay, Mailpit).
    await Mailer(sink.url, "Support <s@example.org>").send(message, "ann@alma.example")
    assert len(sink.messages) == 1


# ---- the tail of undelivered mail is bounded in bytes -----------------------------------


def test_the_undelivered_tail_is_bounded_in_bytes_at_the_worst_case() -> None:
    state = lifecycle.open_case(case_input(f"W-{uuid.uuid4().hex[:6]}"), datetime.now(UTC)).state
    worst = ["🦀" * 5_000, '"\\' * 5_000, "\x00\x1b" * 5_000, "é" * 5_000]
    for i in range(3 * lifecycle.UNDELIVERED_TAIL):
        refused = UndeliveredMessage(
            key=f"case-{'9' * 64}:{i}:notify:information_requested",
            template="information_requested",
            reason=worst[i % len(worst)],
        )
        state = lifecycle.record_undelivered(state, [refused, refused])  # once per key

    assert len(state.undelivered) == lifecycle.UNDELIVERED_TAIL
    for entry in state.undelivered:
        assert len(entry.reason.encode()) <= lifecycle.UNDELIVERED_REASON_BYTES
        assert entry.reason.isprintable()
    size = len(json.dumps([u.model_dump() for u in state.undelivered]).encode())
    assert size <= 16 * 1024, size
    assert lifecycle.snapshot(state).undelivered == state.undelivered
