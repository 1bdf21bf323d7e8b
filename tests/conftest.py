"""Shared test fixtures, one section per component. Each section is self-contained."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Self, cast

import asyncpg
import pytest
import structlog
from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url

# ==============================================================================================
# Case store: throwaway PostgreSQL databases
# ==============================================================================================
#
# Each test session creates its own databases (``cases_test_<random>``) on the local server and
# drops them at the end, so runs never see each other's rows. Without a reachable server the
# PostgreSQL tests are skipped locally, but fail on CI (CI=true), where skipping would hide
# that half the store went untested.

POSTGRES_ADMIN_URL = os.environ.get(
    "CASES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class PostgresDatabases:
    """Creates fresh databases on demand; drops every one of them at teardown."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def create(self) -> str:
        """The URL of a new, empty database."""
        name = f"cases_test_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in self.created:
                # FORCE ends connections a failed test may have left behind in the pool.
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(autouse=True)
def _worker_logs_to_the_real_stderr() -> Iterator[None]:
    """An in-process worker's log lines go to the real stderr, never into a command's output.

    structlog's default logger writes to whatever ``sys.stdout`` is when it logs, and Typer's
    ``CliRunner`` swaps ``sys.stdout`` for the whole process while a command runs (in a thread,
    beside the worker): an activity that logged then landed in the command's output (a signed
    token read from it was refused: "Invalid header padding")."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
async def postgres_databases() -> AsyncIterator[PostgresDatabases]:
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        await conn.close()
    except (TimeoutError, OSError, asyncpg.PostgresError) as err:
        where = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        reason = f"PostgreSQL not reachable at {where} (set CASES_TEST_POSTGRES_URL): {err!r}"
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(reason)
        pytest.skip(reason)
    databases = PostgresDatabases(POSTGRES_ADMIN_URL)
    yield databases
    await databases.drop_all()


@pytest.fixture(scope="session")
async def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """One database for the whole session; tests keep apart by using their own case numbers."""
    return await postgres_databases.create()


# ==============================================================================================
# Notifications: a real SMTP server (aiosmtpd) that collects what it receives
# ==============================================================================================


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps every message it accepts."""

    port: int
    messages: list[Received] = field(default_factory=list)
    refusing: set[str] = field(default_factory=set)
    refused_for_good: dict[str, str] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)  # every RCPT answered with an error
    holding: set[str] = field(default_factory=set)
    _controller: Controller | None = None

    def refuse_once(self, address: str) -> None:
        """The next message to ``address`` is refused, as a full mailbox refuses it (452)."""
        self.refusing.add(address)

    def refuse_always(self, address: str, answer: str = "550 5.1.1 No such user here") -> None:
        """Every message to ``address`` is refused for good with ``answer`` (a 5xx)."""
        self.refused_for_good[address] = answer

    def hold(self, address: str) -> None:
        """Messages to ``address`` wait unanswered at RCPT until ``release()``, as a stalled mail
        server keeps them: the sender is then certainly mid-send when a test needs it to be."""
        self.holding.add(address)

    def release(self) -> None:
        self.holding.clear()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        while address in self.holding:
            await asyncio.sleep(0.05)
        if address in self.refused_for_good:
            self.refusals.append(address)
            return self.refused_for_good[address]
        if address in self.refusing:
            self.refusing.discard(address)
            self.refusals.append(address)
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # Line endings as Python writes them, so tests can compare bodies with plain strings.
        content = envelope.content.replace(b"\r\n", b"\n")
        message = message_from_bytes(content, policy=policy.default)
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), message)
        self.messages.append(received)
        return "250 Message accepted for delivery"

    def start(self) -> Self:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_sinks() -> Iterator[Callable[..., SmtpSink]]:
    """Start SMTP servers on demand (``smtp_sinks(port=...)``); all stop after the test."""
    started: list[SmtpSink] = []

    def start(port: int | None = None) -> SmtpSink:
        sink = SmtpSink(port or free_port()).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (yet): an SMTP server that is down."""
    return free_port()


@pytest.fixture
def smtp_server(smtp_sinks: Callable[..., SmtpSink]) -> SmtpSink:
    return smtp_sinks()


# ==============================================================================================
# Temporal: one dev server per session (time skipping v2, search attributes); a worker per test
# ==============================================================================================


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[Any]:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

    from runtime.connection import temporal_cli
    from workflows import search

    environment = await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search.ALL_KEYS,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
    )
    yield environment
    await environment.shutdown()


class Inbox(SmtpSink):
    """The SMTP sink, asked the way a scenario asks: did a message with this subject arrive?"""

    def matching(self, **headers: str) -> list[EmailMessage]:
        return [
            r.message
            for r in self.messages
            if all(
                want.lower() in str(r.message.get(name, "")).lower()
                for name, want in headers.items()
            )
        ]

    async def wait_for(
        self, count: int = 1, timeout: float = 20.0, **headers: str
    ) -> list[EmailMessage]:
        async def arrived() -> list[EmailMessage]:
            while len(found := self.matching(**headers)) < count:
                await asyncio.sleep(0.05)
            return found

        try:
            return await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            seen = [(r.message["To"], r.message["Subject"]) for r in self.messages]
            raise AssertionError(
                f"expected {count} message(s) with {headers}; got {seen}"
            ) from None


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    sink = Inbox(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Case numbers and task queues of this test only."""
    run = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}-{run}"


@pytest.fixture
def worker_settings(
    request: pytest.FixtureRequest, tmp_path: Any, inbox: Inbox, unique: Callable[[str], str]
) -> Any:
    """The worker's settings; ``indirect`` parametrisation with False runs it unsandboxed."""
    from settings import Settings

    return Settings(
        workflow_sandbox=getattr(request, "param", True),
        task_queue=unique("tq"),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}",
        smtp_url=inbox.url,
        support_email="support-team@example.org",
        development_email="development-team@example.org",
        mail_from="Support <support@example.org>",
        policy_shortest="1s",  # scenarios on a stopwatch may use deadlines of seconds
    )


@pytest.fixture
async def store(worker_settings: Any) -> AsyncIterator[Any]:
    """The test's case store, for tests that start and stop workers themselves."""
    from activities import CaseStore, upgrade

    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    yield store
    await store.dispose()


@pytest.fixture
async def case_worker(env: Any, worker_settings: Any) -> AsyncIterator[Any]:
    """The project's real worker (workflows and activities) on this test's task queue, yielded
    once Temporal lists it as polling."""
    from activities import CaseStore, upgrade
    from tests.scenario import worker_polling
    from worker import build_worker

    await upgrade(worker_settings.database_url)
    store = CaseStore(worker_settings.database_url)
    async with build_worker(env.client, worker_settings, store):
        await worker_polling(env.client, worker_settings.task_queue)
        yield store
    await store.dispose()
