"""Other systems: the README's worked examples (Python client, ``temporal`` CLI, curl against the
HTTP API with plain JSON), run as written against the embedded dev server with its HTTP API, and
the README's ready-made visibility queries."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from runtime.devserver import DevServer, DevServerConfig
from settings import Settings
from starter.client import CaseClient
from tests import readme
from tests.conftest import free_port
from tests.scenario import worker_polling
from workflows.contract import Actor, CaseInput, Snapshot, Status, TransitionRequest

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


@dataclass
class System:
    server: DevServer
    client: Client

    @property
    def cases(self) -> CaseClient:
        return CaseClient(self.client)  # the default task queue: this server is ours alone

    def localise(self, text: str, prefix: str) -> str:
        """A README example pointed at this server (its ports) and this test's case numbers."""
        config = self.server.config
        text = text.replace("localhost:7233", f"127.0.0.1:{config.port}")
        text = text.replace("localhost:7243", f"127.0.0.1:{config.http_port}")
        return readme.with_cases(text, prefix)


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """The embedded dev server (HTTP API on) and the project's worker on ``support-cases``."""
    from worker import run_worker

    data = tmp_path_factory.mktemp("other-systems")
    server = DevServer(
        DevServerConfig(data_dir=data, port=free_port(), ui_port=free_port(), http_port=free_port())
    )
    client = await server.start()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{data / 'cases.db'}")
    worker = asyncio.create_task(run_worker(client, settings))
    await worker_polling(client, settings.task_queue)
    yield System(server, client)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    await server.stop()


async def sh(script: str, fails: bool = False, **env: str) -> str:
    """Run a shell snippet as a user would, the venv's ``temporal`` first on the PATH."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    environ = {**os.environ, "PATH": path, **env}
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    said = f"{script}\nexit {proc.returncode}\n{out.decode()}{err.decode()}"
    assert (proc.returncode != 0) is fails, said
    return out.decode() + err.decode() if fails else out.decode()


async def wait_status(cases: CaseClient, number: str, status: str) -> Snapshot:
    for _ in range(100):
        snap = await cases.snapshot(number)
        if snap.status == status:
            return snap
        await asyncio.sleep(0.1)
    raise AssertionError(f"case {number} stayed {snap.status}, never {status}")


async def test_the_readme_examples_in_order(
    system: System,
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = unique("X").replace("-", "")
    number = f"{prefix}6"
    cases = system.cases

    # Python: the typed client opens the case, moves it, meets a rejection, lists it.
    code = system.localise(readme.example("python"), prefix)
    body, run_line = code.rstrip().rsplit("\n", 1)
    assert run_line == "asyncio.run(main())"
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{system.server.config.port}")
    namespace: dict[str, Any] = {}
    exec(compile(body, "README.md (python example)", "exec"), namespace)
    await namespace["main"]()
    printed = capsys.readouterr().out
    assert "Pending Customer Response" in printed
    assert f"not_allowed case {number} is in Pending Customer Response" in printed
    assert (await cases.snapshot(number)).status == "Pending Customer Response"

    # The temporal CLI: signal (customer reply), query, update, and a case started from outside.
    out = await sh(system.localise(readme.example("temporal-cli"), prefix))
    assert '"status":"Waiting for Process"' in out  # the query, after the signal
    assert "status:Tier 1 Analysis" in out  # the update's answer
    assert (await cases.snapshot(number)).status == "Tier 1 Analysis"
    other = await wait_status(cases, f"{prefix}7", "New")
    assert other.priority == "high" and other.history[0].actor.role == "tier1"

    # curl, HTTP API: a signal moves the case ...
    await sh(system.localise(readme.example("curl-signal"), prefix))
    snap = await wait_status(cases, number, "Pending Customer Response")
    assert snap.history[-1].note == "which branch?"

    # ... a query reads it ...
    answer = json.loads(await sh(system.localise(readme.example("curl-query"), prefix)))
    [queried] = answer["queryResult"]
    assert queried["case_number"] == number and queried["status"] == "Pending Customer Response"

    # ... and an update answers with the rejection, reason code and all.
    answer = json.loads(await sh(system.localise(readme.example("curl-update"), prefix)))
    failure = answer["outcome"]["failure"]
    assert (
        f"case {number} is in Pending Customer Response; transition to Closed" in failure["message"]
    )
    assert failure["applicationFailureInfo"]["details"] == ["not_allowed"]


async def test_an_http_api_signal_moves_a_case(
    system: System, unique: Callable[[str], str]
) -> None:
    """Plain JSON over HTTP, nothing Temporal-specific on the sending side: curl alone."""
    number = unique("HTTP")
    tier1 = Actor(role="tier1", name="Tom One")
    await system.cases.open(
        CaseInput(
            case_number=number,
            institution="Alma University",
            product="Alma",
            priority="normal",
            title="t",
            contact_email="ann@alma.example",
            opened_by=tier1,
        )
    )
    await system.cases.transition(number, TransitionRequest(to=Status.TIER1_ANALYSIS, actor=tier1))
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test"
    body = {"input": [{"to": "Closing", "actor": {"role": "tier1", "name": "Tom One"}}]}
    url = (
        f"http://127.0.0.1:{system.server.config.http_port}"
        f"/api/v1/namespaces/default/workflows/case-{number}/signal/transition"
    )
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "--fail-with-body", "-X", "POST", url,
        "-H", "Content-Type: application/json", "-d", json.dumps(body),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    snap = await wait_status(system.cases, number, "Closing")
    assert snap.next_deadline is not None and snap.next_deadline.action == "closing_closed"

    # A rejected signal is kept in the snapshot, the case goes on unharmed.
    body = {"input": [{"to": "Development", "actor": {"role": "tier1", "name": "Tom One"}}]}
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "--fail-with-body", "-X", "POST", url,
        "-H", "Content-Type: application/json", "-d", json.dumps(body),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await proc.communicate()
    for _ in range(100):
        snap = await system.cases.snapshot(number)
        if snap.rejected:
            break
        await asyncio.sleep(0.1)
    assert [r.reason for r in snap.rejected] == ["not_allowed"] and snap.status == "Closing"


async def test_the_readme_queries_are_valid(system: System) -> None:
    queries = readme.queries()
    assert len(queries) >= 6
    assert any("CaseNextDeadline" in q for q in queries)
    assert any("CaseInstitution" in q for q in queries)
    assert any('CaseStatus = "Pending Release" AND CaseRelease' in q for q in queries)
    for query in queries:
        [_ async for _ in system.client.list_workflows(query, limit=1)]  # raises if invalid


async def test_the_readme_signed_examples(
    system: System, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """Trusted senders: a worker with a senders file, a script with a sender key (README "Trust
    model"): the signed start and the signed curl signal move the case, the unsigned update is
    refused with the reason."""
    from datetime import UTC, datetime, timedelta

    from runtime.signing import new_key, write_key
    from worker import run_worker
    from workflows import trust

    key, public = new_key("desk", "desk-1")
    write_key(tmp_path / "desk.key", key)
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    senders = tmp_path / "senders.toml"
    senders.write_text(
        f'required_from = "{since}"\n[[senders]]\nname = "desk"\nroles = ["tier1", "tier2"]\n'
        f'[[senders.keys]]\nkid = "desk-1"\npublic_key = "{public}"\nnot_before = "{since}"\n'
    )
    queue = unique("trusted")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}",
        task_queue=queue,
        trusted_senders=senders,
    )
    worker = asyncio.create_task(run_worker(system.client, settings))
    try:
        prefix = unique("S").replace("-", "")
        cases = system.cases

        def localise(name: str) -> str:
            text = system.localise(readme.example(name), prefix)
            return text.replace("--task-queue support-cases", f"--task-queue {queue}")

        await sh(localise("signed"), CASES_SIGNING_KEY=str(tmp_path / "desk.key"))
        snap = await wait_status(cases, f"{prefix}8", "Tier 1 Analysis")
        assert [h.actor.name for h in snap.history] == ["Tom One", "Tom One"]

        said = await sh(localise("unsigned"), fails=True)
        assert "no proof: trusted senders are required on this case" in said
        assert (await cases.snapshot(f"{prefix}8")).status == "Tier 1 Analysis"
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        trust.install(queue, None)
