"""Trusted senders on the real dev server: with ``CASES_TRUSTED_SENDERS`` set, only an actor
proven by a registered sender moves a case or a release; every other event is rejected (a signal:
recorded; an update: an error) and the case goes on. A history captured before a key was revoked
still replays against the file that revokes it (keys get an end, never a deletion)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from typer.testing import CliRunner

from runtime.signing import KeyFile, Signer, new_key, write_key
from starter.cli import app
from starter.client import CaseClient, CaseRejected
from tests.reliability.test_replay import load, replayer
from tests.scenario import CUSTOMER, TIER1, TIER2, Case
from workflows import trust
from workflows.case import SupportCase
from workflows.contract import (
    Actor,
    ReleaseInput,
    ReleaseShipped,
    ReleaseStatus,
    Snapshot,
    Status,
    TrainInput,
    TransitionRequest,
)
from workflows.release import Release

KB = Actor(role="kb_team", name="Kay Bee")
# Histories captured under trusted senders, with their senders file (not in tests/histories/
# itself: replayed without senders, their rejected unsigned events would be accepted).
TRUSTED_HISTORIES = Path(__file__).resolve().parent / "histories" / "trusted"


class Senders:
    """Two registered senders (the support desk, the customer portal) and their key files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.since = datetime.now(UTC) - timedelta(hours=1)  # deployed an hour ago
        self.desk, desk_public = new_key("desk", "desk-1")
        self.portal, portal_public = new_key("portal", "portal-1")
        # The worker's own key: what its release trains send (CASES_SIGNING_KEY of the worker).
        self.worker, worker_public = new_key("worker", "worker-1")
        write_key(folder / "worker.key", self.worker)
        self.entries: list[dict[str, Any]] = [
            {
                "name": "desk",
                "roles": ["tier1", "tier2", "development"],
                "keys": [self._key("desk-1", desk_public)],
            },
            {
                "name": "portal",
                "roles": ["customer"],
                "institutions": ["Alma University"],
                "keys": [self._key("portal-1", portal_public)],
            },
            {
                "name": "worker",
                "roles": ["development"],
                "keys": [self._key("worker-1", worker_public)],
            },
        ]

    def _key(self, kid: str, public: str) -> dict[str, Any]:
        return {"kid": kid, "public_key": public, "not_before": self.since.isoformat()}

    def write(self, name: str = "senders.json") -> Path:
        path = self.folder / name
        data = {"required_from": self.since.isoformat(), "senders": self.entries}
        path.write_text(json.dumps(data, indent=2))
        return path

    def revoke(self, kid: str, at: datetime) -> Path:
        """The file as it is after revoking a key: the key gets an end; nothing is deleted."""
        for sender in self.entries:
            for key in sender["keys"]:
                if key["kid"] == kid:
                    key["not_after"] = at.isoformat()
        return self.write("senders-revoked.json")


@pytest.fixture
def senders(tmp_path: Path) -> Senders:
    return Senders(tmp_path)


@asynccontextmanager
async def worker_trusting(
    env: Any, worker_settings: Any, path: Path, key: Path | None = None
) -> AsyncIterator[Any]:
    """The project's worker, configured as ``CASES_TRUSTED_SENDERS=<path>`` (and
    ``CASES_SIGNING_KEY=<key>``) configure it."""
    from activities import CaseStore, upgrade
    from worker import build_worker

    settings = worker_settings.model_copy(update={"trusted_senders": path, "signing_key": key})
    await upgrade(settings.database_url)
    store = CaseStore(settings.database_url)
    try:
        async with build_worker(env.client, settings, store):
            yield store
    finally:
        trust.install(settings.task_queue, None)
        await store.dispose()


@pytest.fixture
async def trusted_worker(env: Any, worker_settings: Any, senders: Senders) -> AsyncIterator[Any]:
    key = senders.folder / "worker.key"
    async with worker_trusting(env, worker_settings, senders.write(), key) as store:
        yield store


def signed(env: Any, worker_settings: Any, key: KeyFile) -> CaseClient:
    return CaseClient(env.client, worker_settings.task_queue, Signer(key))


async def rejected(case: Case, count: int) -> Snapshot:
    return await case.wait(lambda s: len(s.rejected) >= count)


async def test_only_a_proven_actor_moves_a_case(
    env: Any, trusted_worker: Any, worker_settings: Any, senders: Senders, unique: Any
) -> None:
    desk = signed(env, worker_settings, senders.desk)
    case = Case(env, worker_settings.task_queue, unique("trust"))
    case.client = desk
    await case.open(opened_by=TIER1)
    unsigned = CaseClient(env.client, worker_settings.task_queue)
    portal, desk_key = Signer(senders.portal), Signer(senders.desk)
    wid = f"case-{case.number}"
    now = datetime.now(UTC)

    def move(actor: Actor, proof: str | None, event_id: str = "ev-1") -> TransitionRequest:
        return TransitionRequest(to="Tier 1 Analysis", actor=actor, event_id=event_id, proof=proof)

    attempts: list[tuple[str, TransitionRequest, str, str]] = [
        ("unsigned", move(TIER1, None), "unauthenticated", "no proof"),
        (
            "a forged role: the portal asserts tier1",
            move(TIER1, portal.token(wid, TIER1, "ev-1")),
            "not_permitted",
            "sender portal may not assert the role tier1",
        ),
        (
            "a forged role: a tier1 proof on a kb_team event",
            move(KB, desk_key.token(wid, TIER1, "ev-1")),
            "unauthenticated",
            "another actor",
        ),
        (
            "a token for another case",
            move(TIER1, desk_key.token("case-someone-else", TIER1, "ev-1")),
            "unauthenticated",
            f"the proof is for case-someone-else, not {wid}",
        ),
        (
            "an expired token",
            move(TIER1, desk_key.token(wid, TIER1, "ev-1", now - timedelta(minutes=10))),
            "unauthenticated",
            "the proof expired at",
        ),
    ]
    # As updates: each an error with its reason, nothing in the history.
    for what, event, reason, says in attempts:
        with pytest.raises(CaseRejected) as caught:
            await unsigned.transition(case.number, event)
        assert caught.value.reason == reason, what
        assert says in str(caught.value), what
    # As signals: each recorded, the case unharmed.
    for _, event, _, _ in attempts:
        await unsigned.signal(case.number, "transition", event)
    snap = await rejected(case, len(attempts))
    assert snap.status == "New"
    assert [
        (r.reason, says in r.message)
        for r, (_, _, _, says) in zip(snap.rejected, attempts, strict=True)
    ] == [(reason, True) for _, _, reason, _ in attempts]

    # A signed one moves the case; the same token a second time is a duplicate, harmless.
    good = move(TIER1, desk_key.token(wid, TIER1, "ev-2"), event_id="ev-2")
    snap = await unsigned.transition(case.number, good)
    assert snap.status == "Tier 1 Analysis" and snap.history[-1].actor == TIER1
    assert (await unsigned.transition(case.number, good)).status == "Tier 1 Analysis"

    # The client signs for its caller: the customer's portal answers, the desk moves on.
    await case.to("Pending Customer Response", TIER1)
    case.client = signed(env, worker_settings, senders.portal)
    assert (await case.reply()).status == "Waiting for Process"
    with pytest.raises(CaseRejected) as caught:  # the portal cannot speak for Tier 2
        await case.to("Tier 2 Analysis", TIER2)
    assert caught.value.reason == "not_permitted"


async def test_a_case_opened_without_a_proof_fails_at_once(
    env: Any, trusted_worker: Any, worker_settings: Any, unique: Any
) -> None:
    case = Case(env, worker_settings.task_queue, unique("noproof"))
    await case.open(opened_by=CUSTOMER)  # the client has no key: the start goes unsigned
    with pytest.raises(WorkflowFailureError) as failed:
        await case.handle.result()
    cause: Any = failed.value.cause
    assert cause.type == "InvalidCaseInput"
    assert "no proof: trusted senders are required" in str(cause)


async def test_a_release_ships_only_on_a_proven_ship_now(
    env: Any, trusted_worker: Any, worker_settings: Any, senders: Senders, unique: Any
) -> None:
    release_id = unique("r")
    unsigned = CaseClient(env.client, worker_settings.task_queue)
    await unsigned.schedule_release(ReleaseInput(release_id=release_id))
    await unsigned.ship_now(release_id)  # no payload, as before trusted senders
    await unsigned.ship_now(release_id, CUSTOMER)  # an actor, no proof

    async def status(check: Callable[[ReleaseStatus], bool]) -> ReleaseStatus:
        for _ in range(200):
            if check(found := await unsigned.release_status(release_id)):
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"release never got there: {found}")

    found = await status(lambda s: len(s.rejected) == 2)
    assert found.shipped_at is None
    assert [r.reason for r in found.rejected] == ["unauthenticated", "not_permitted"]
    assert "a release is moved by staff, not customer" in found.rejected[1].message

    dev = Actor(role="development", name="Dev Eloper")
    await signed(env, worker_settings, senders.desk).ship_now(release_id, dev)
    assert (await status(lambda s: s.shipped_at is not None)).shipped_at is not None


async def test_releases_work_under_trusted_senders(
    env: Any, trusted_worker: Any, worker_settings: Any, senders: Senders, unique: Any
) -> None:
    """The worker signs its own release signals (register, a train's reschedule, release
    shipped) with its key; a forged release_shipped is refused; a proven ship_now reaches the
    case waiting on it."""
    desk = signed(env, worker_settings, senders.desk)
    case = Case(env, worker_settings.task_queue, unique("rel"))
    case.client = desk
    await case.open(opened_by=TIER1)
    dev = Actor(role="development", name="Dev Eloper")
    await case.to("Tier 1 Analysis", TIER1)
    await case.handoff(2, "defect_verification", TIER1)
    await case.walk(("Tier 2 Analysis", TIER2), ("Development", TIER2))
    release = unique("r")
    await case.to("Pending Release", TIER2, release_id=release)  # the owner tier's analyst

    train = TrainInput(train=unique("t"), release_format=release, ships_after="30d")
    await env.client.execute_workflow(
        "ReleaseTrain", train, id=unique("train"), task_queue=worker_settings.task_queue
    )
    status = await desk.release_status(release)
    for _ in range(100):
        if (status := await desk.release_status(release)).ships_at is not None:
            break
        await asyncio.sleep(0.1)
    assert status.shipped_at is None and not status.rejected and status.cases_registered == 1

    # A forged "shipped a month ago" would close the case at once: refused, recorded.
    forged = ReleaseShipped(release_id=release, shipped_at=datetime.now(UTC) - timedelta(days=30))
    await CaseClient(env.client, worker_settings.task_queue).release_shipped(case.number, forged)
    snap = await rejected(case, 1)
    assert snap.rejected[0].reason == "unauthenticated" and snap.release_shipped_at is None

    await desk.ship_now(release, dev)
    snap = await case.wait(lambda s: s.release_shipped_at is not None)
    assert snap.status == "Pending Release" and len(snap.rejected) == 1


async def test_a_history_from_before_a_key_was_revoked_still_replays(
    env: Any, trusted_worker: Any, worker_settings: Any, senders: Senders, unique: Any
) -> None:
    case = Case(env, worker_settings.task_queue, unique("revoke"))
    case.client = signed(env, worker_settings, senders.desk)
    await case.open(opened_by=TIER1)
    await case.client.signal(
        case.number, "transition", TransitionRequest(to=Status.TIER1_ANALYSIS, actor=TIER1)
    )
    await case.wait_status("Tier 1 Analysis")
    unsigned = CaseClient(env.client, worker_settings.task_queue)
    await unsigned.signal(case.number, "transition", TransitionRequest(to="Closing", actor=TIER1))
    await rejected(case, 1)
    await case.to("Closing", TIER1)
    history = await case.handle.fetch_history()
    queue = None  # a Replayer runs on a task queue of its own: the registry for any queue

    # Today the desk's key is revoked: it gets an end, now by the case's own clock (the test
    # server's clock is its own). Yesterday's events replay as they ran.
    revoked = senders.revoke("desk-1", await env.get_current_time(case.handle))
    trust.install(queue, trust.load(revoked))
    try:
        await replayer(SupportCase, Release).replay_workflow(history)
    finally:
        trust.install(queue, None)
    if os.environ.get("CAPTURE_TRUSTED_HISTORY"):  # regenerate tests/histories/trusted/
        TRUSTED_HISTORIES.mkdir(exist_ok=True)
        (TRUSTED_HISTORIES / "senders-revoked.json").write_text(revoked.read_text())
        text = json.dumps(json.loads(history.to_json()), separators=(",", ":"))
        (TRUSTED_HISTORIES / "revoked_key.case-1.json").write_text(text + "\n")

    # Deleting the key instead would change the past: the replay no longer matches the history.
    senders.entries = [s for s in senders.entries if s["name"] != "desk"]
    trust.install(queue, trust.load(senders.write("senders-deleted.json")))
    try:
        with pytest.raises(workflow.NondeterminismError):
            await replayer(SupportCase, Release).replay_workflow(history)
    finally:
        trust.install(queue, None)


async def test_the_captured_trusted_histories_replay_against_the_file_of_today() -> None:
    """Captured under trusted senders (signed start and events, a rejected unsigned one), kept
    with the senders file as it is after the key was revoked: today's code replays them."""
    files = sorted(TRUSTED_HISTORIES.glob("*.case-*.json"))
    assert files, "no captured trusted history (CAPTURE_TRUSTED_HISTORY=1)"
    trust.install(None, trust.load(TRUSTED_HISTORIES / "senders-revoked.json"))
    try:
        for path in files:
            history = load(path)  # with the workflow id the run had (the case checks it)
            await replayer(SupportCase, Release).replay_workflow(history)
    finally:
        trust.install(None, None)


async def test_without_the_setting_actors_are_self_asserted(
    env: Any, case_worker: Any, worker_settings: Any, unique: Any
) -> None:
    case = await Case(env, worker_settings.task_queue, unique("plain")).open(opened_by=TIER1)
    assert (await case.to("Tier 1 Analysis", TIER1)).status == "Tier 1 Analysis"


async def test_the_command_line_makes_keys_and_signs_with_them(
    env: Any, worker_settings: Any, tmp_path: Path, unique: Any
) -> None:
    runner = CliRunner()
    environ = {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "TEMPORAL_PROFILE": None,
        "CASES_TASK_QUEUE": worker_settings.task_queue,
        "CASES_SIGNING_KEY": None,
    }

    async def cli(*args: str, expect: int = 0, **env: str) -> str:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env={**environ, **env})
        assert result.exit_code == expect, (args, result.stdout, result.stderr, result.exception)
        return result.stdout + result.stderr

    key = tmp_path / "desk.key"
    entry = await cli(
        "keys", "new", "--sender", "desk", "--role", "tier1", "--role", "development",
        "--out", str(key),
    )  # fmt: skip
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "[[senders.keys]]" in entry and 'roles = ["tier1", "development"]' in entry
    await cli("keys", "new", "--sender", "desk", "--role", "tier1", "--out", str(key), expect=2)
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    senders = tmp_path / "senders.toml"
    senders.write_text(f'required_from = "{since}"\n{entry}')  # the entry as printed
    number = unique("cli")
    async with worker_trusting(env, worker_settings, senders):
        opening = ("open", number, "--institution", "Alma University", "--product", "Alma",
                   "--title", "t", "--contact", "ann@alma.example", "--as", "tier1")  # fmt: skip
        await cli("--key", str(key), *opening)
        said = await cli("transition", number, "Tier 1 Analysis", "--as", "tier1", expect=1)
        assert "rejected (unauthenticated)" in said and "no proof" in said
        await cli("--key", str(key), "transition", number, "Tier 1 Analysis", "--as", "tier1")
        said = await cli(
            "transition", number, "Closing", "--as", "tier2", expect=1,
            CASES_SIGNING_KEY=str(key),
        )  # fmt: skip
        assert "rejected (not_permitted)" in said and "may not assert the role tier2" in said

        # A token for scripts: verified by the same check the case runs.
        proof = (await cli(
            "keys", "token", "--key", str(key), "--case", number, "--as", "tier1",
            "--name", "Tom One", "--event-id", "script-1",
        )).strip()  # fmt: skip
        refused = trust.verify(
            trust.load(senders),
            proof,
            audience=f"case-{number}",
            actor=TIER1,
            event_id="script-1",
            now=datetime.now(UTC),
        )
        assert refused is None

        release = unique("r")
        await cli("release", "schedule", release, "--in", "1d", CASES_SIGNING_KEY=str(key))
        await cli("release", "ship-now", release, "--as", "development", CASES_SIGNING_KEY=str(key))
        status = CaseClient(env.client, worker_settings.task_queue)
        for _ in range(100):
            if (await status.release_status(release)).shipped_at is not None:
                break
            await asyncio.sleep(0.1)
        assert (await status.release_status(release)).shipped_at is not None
