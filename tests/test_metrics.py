"""The worker's Prometheus endpoint after a short scenario: the SDK's runtime metrics and the
product's own (transitions, rejected events, notifications, deadline lateness) with the right
values; and every log line of an activity carries the case number and the workflow id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

import logs
from activities import CaseStore, upgrade
from runtime.telemetry import metrics_runtime
from tests.conftest import free_port
from tests.scenario import TIER1, Case
from worker import build_worker
from workflows.contract import Actor, DeadlinePolicy, Status, TransitionRequest, case_workflow_id


@dataclass
class Scraped:
    case_number: str
    samples: list[tuple[str, dict[str, str], float]]
    log_lines: list[dict[str, Any]]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


@pytest.fixture(scope="module")
async def scraped(env: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scraped]:
    """One short scenario on a worker whose client reports to its own Prometheus endpoint."""
    from tests.conftest import Inbox

    port = free_port()
    runtime = metrics_runtime(port, host="127.0.0.1")  # one Runtime per process: this one
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    from settings import Settings

    inbox = Inbox(free_port()).start()
    run = tmp_path_factory.mktemp("metrics")
    settings = Settings(
        task_queue=f"tq-metrics-{port}",
        database_url=f"sqlite+aiosqlite:///{run / 'cases.db'}",
        smtp_url=inbox.url,
        policy_shortest="1s",  # the closing deadline of two seconds
    )
    stream = io.StringIO()
    logs.configure("json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    await upgrade(settings.database_url)
    store = CaseStore(settings.database_url)
    number = f"M-{port}"
    try:
        async with build_worker(client, settings, store):
            case = Case(env, settings.task_queue, number)
            await case.open(policy=DeadlinePolicy(closing_closed="2s"))
            # A signal the table refuses: recorded, counted, the case goes on.
            await case.client.signal(
                number,
                "transition",
                TransitionRequest(to=Status.CLOSED, actor=Actor(role="tier2", name="Tess")),
            )
            await case.wait(lambda s: len(s.rejected) == 1)
            await case.walk(("Tier 1 Analysis", TIER1), ("Closing", TIER1))
            await case.wait_status("Closed", timeout=30)  # the 2-second closing deadline
            await inbox.wait_for(3)  # opened, closing, closed
            # An activity counts after its email went out, the SDK after the activity's result.
            samples = await _scrape_until(port, _all_counted)
    finally:
        await store.dispose()
        inbox.stop()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    yield Scraped(number, samples, lines)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


Samples = list[tuple[str, dict[str, str], float]]


def _all_counted(samples: Samples) -> bool:
    """Every count of the scenario is in: three emails, four transitions, one deadline acted
    on, and the SDK's workflow and activity metrics."""
    scraped = Scraped("", samples, [])
    names = scraped.names()
    return (
        scraped.value("case_notifications_total", result="sent") >= 3
        and scraped.value("case_status_transitions_total") >= 4
        and scraped.value("case_deadline_lateness_seconds_count") >= 1
        and any(n.startswith("temporal_workflow_completed") for n in names)
        and any(n.startswith("temporal_activity_execution_latency") for n in names)
    )


async def _scrape_until(
    port: int, done: Callable[[Samples], bool], within: float = 30.0
) -> Samples:
    """The endpoint's samples, scraped until ``done`` holds (or ``within`` seconds passed)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        samples = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        if done(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.2)


def test_status_transitions_by_from_and_to(scraped: Scraped) -> None:
    count: Callable[..., float] = lambda **kw: scraped.value(  # noqa: E731
        "case_status_transitions_total", **kw
    )
    assert count(**{"from": "(open)", "to": "New"}) == 1
    assert count(**{"from": "New", "to": "Tier 1 Analysis"}) == 1
    assert count(**{"from": "Tier 1 Analysis", "to": "Closing"}) == 1
    assert count(**{"from": "Closing", "to": "Closed"}) == 1
    assert count() == 4


def test_rejected_events_by_reason(scraped: Scraped) -> None:
    rejected = [
        (labels, v) for n, labels, v in scraped.samples if n == "case_rejected_events_total"
    ]
    assert len(rejected) == 1
    labels, value = rejected[0]
    assert value == 1
    assert labels["event"] == "transition"
    assert labels["reason"]


def test_notifications_sent_by_template(scraped: Scraped) -> None:
    sent = scraped.value("case_notifications_total", result="sent")
    assert sent == 3
    templates = {
        labels["template"]
        for n, labels, v in scraped.samples
        if n == "case_notifications_total" and v
    }
    assert len(templates) == 3
    assert scraped.value("case_notifications_total", result="failed") == 0


def test_deadline_lateness_histogram(scraped: Scraped) -> None:
    assert scraped.value("case_deadline_lateness_seconds_count") == 1
    late = scraped.value("case_deadline_lateness_seconds_sum")
    assert 0 <= late < 10  # acted within seconds of its instant
    buckets = {
        labels["le"]: v
        for n, labels, v in scraped.samples
        if n == "case_deadline_lateness_seconds_bucket"
    }
    assert buckets["+Inf"] == 1
    assert "0.5" in buckets and "3600" in buckets  # seconds, not the SDK's millisecond buckets


def test_the_sdk_runtime_metrics_are_on_the_same_endpoint(scraped: Scraped) -> None:
    names = scraped.names()
    assert any(n.startswith("temporal_workflow_completed") for n in names), sorted(names)
    assert any(n.startswith("temporal_local_activity_execution_latency") for n in names), names
    assert any(n.startswith("temporal_worker_task_slots_available") for n in names)


def test_every_mail_and_activity_log_line_carries_case_number_and_workflow_id(
    scraped: Scraped,
) -> None:
    notify = [
        line for line in scraped.log_lines if str(line.get("event", "")).startswith("notify.")
    ]
    assert len(notify) >= 3  # the relay's: sent
    activity = [line for line in scraped.log_lines if "activity" in line]
    for line in [*notify, *activity]:
        assert line["case_number"] == scraped.case_number
        assert line["workflow_id"] == case_workflow_id(scraped.case_number)


def test_the_grafana_dashboard_queries_only_series_the_worker_exports(scraped: Scraped) -> None:
    """deploy/grafana/dashboards/*.json: every metric a panel's query names is on the endpoint
    (a renamed metric would leave a panel silently empty)."""
    import re
    from pathlib import Path

    dashboards = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
    queried: set[str] = set()
    for path in dashboards.glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queried |= set(re.findall(r"\b(?:case|temporal)_[a-z_]+\b", target["expr"]))
    assert len(queried) >= 8, queried
    missing = queried - scraped.names()
    assert not missing, f"not exported: {sorted(missing)}; exported: {sorted(scraped.names())}"
