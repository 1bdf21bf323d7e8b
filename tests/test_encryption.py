"""Encrypted case data: with a key set, Temporal holds no name, address, title or comment in the
clear; the codec server shows them to those allowed; cases opened before the key, and under an
older key, go on; SQL errors never carry their parameters; search attributes hold no personal
data."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    QueryWorkflowRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from activities import CaseStore, upgrade
from activities.db import make_engine
from runtime.encryption import (
    ENCODING,
    KEY_ID,
    DecryptionError,
    EncryptionCodec,
    EncryptionConfigError,
    Keyring,
    data_converter,
    fingerprint,
    keyring,
    new_key,
)
from settings import Settings
from starter import codec_server
from starter.client import CaseClient, CaseRejected
from tests.readme import commands, example
from tests.scenario import TIER1, Case
from workflows import lifecycle, search
from workflows.contract import Actor, CaseInput, Status, case_workflow_id

KEY_A = new_key()
KEY_B = new_key()

# What a case says about people: none of it may reach Temporal in the clear.
NAME = "Zelda Quixote"
EMAIL = "zelda.quixote@alma.example"
TITLE = "Overdue fines charged twice on card 4471"
COMMENT = "The receipt from the Norrebro branch says 12.50 twice"
NOTE = "Phoned Ms Quixote about her receipt"
SECRETS = [NAME, EMAIL, TITLE, COMMENT, NOTE]
ZELDA = Actor(role="customer", name=NAME, institution="Alma University")


def plain(value: Any) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


def write_keys(path: Path, current: str, **keys: str) -> Path:
    rows = "\n".join(f'{kid} = "{key}"' for kid, key in keys.items())
    path.write_text(f'current = "{current}"\n\n[keys]\n{rows}\n')
    return path


# ---- the codec alone -------------------------------------------------------------------------


async def test_a_payload_is_sealed_names_its_key_and_opens_again() -> None:
    codec = EncryptionCodec(Keyring.single(KEY_A))
    original = plain({"contact_email": EMAIL, "title": TITLE})
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING == b"binary/encrypted"
    key_id = sealed.metadata[KEY_ID].decode()
    assert key_id == fingerprint(base64.b64decode(KEY_A))
    assert EMAIL.encode() not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # the inner metadata is sealed too
    [again] = await codec.encode([original])
    assert again.data != sealed.data  # a fresh nonce each time
    assert await codec.decode([sealed, again]) == [original, original]


async def test_plain_payloads_from_other_systems_pass_through() -> None:
    codec = EncryptionCodec(Keyring.single(KEY_A))
    payload = plain({"text": COMMENT})
    assert await codec.decode([payload]) == [payload]


async def test_an_unknown_key_or_an_altered_payload_is_a_clear_error() -> None:
    [sealed] = await EncryptionCodec(Keyring.single(KEY_A)).encode([plain("x")])
    with pytest.raises(DecryptionError, match="does not have"):
        await EncryptionCodec(Keyring.single(KEY_B)).decode([sealed])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(DecryptionError, match="does not decrypt"):
        await EncryptionCodec(Keyring.single(KEY_A)).decode([altered])


async def test_a_keys_file_reads_old_keys_and_writes_with_the_current(tmp_path: Path) -> None:
    [old] = await EncryptionCodec(Keyring.single(KEY_A)).encode([plain("before")])
    ring = Keyring.from_file(write_keys(tmp_path / "keys.toml", "2026-11", **{
        "2026-06": KEY_A, "2026-11": KEY_B,
    }))  # fmt: skip
    codec = EncryptionCodec(ring)
    # The single key's payloads name its fingerprint, which finds it under its new name.
    assert await codec.decode([old]) == [plain("before")]
    [new] = await codec.encode([plain("after")])
    assert new.metadata[KEY_ID] == b"2026-11"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"encryption_key": "not base64!"}, "not base64"),
        ({"encryption_key": base64.b64encode(b"x" * 16).decode()}, "16 bytes"),
        ({"encryption_key": KEY_A, "encryption_keys_file": "keys.toml"}, "not both"),
        ({"encryption_keys_file": "missing.toml"}, "cannot read"),
        ({"encryption_keys_file": "nocurrent.toml"}, "names no key"),
        ({"encryption_keys_file": "notoml.toml"}, "not TOML"),
    ],
)
def test_bad_key_settings_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write_keys(tmp_path / "keys.toml", "a", a=KEY_A)
    write_keys(tmp_path / "nocurrent.toml", "b", a=KEY_A)
    (tmp_path / "notoml.toml").write_text("current = \n")
    with pytest.raises(EncryptionConfigError, match=message) as raised:
        keyring(Settings(**settings))  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    assert KEY_A not in str(raised.value)


def test_encryption_is_off_unless_a_key_is_set() -> None:
    assert data_converter(Settings()) is pydantic_data_converter
    assert data_converter(Settings(encryption_key="")) is pydantic_data_converter


async def test_a_failure_message_is_encrypted_too() -> None:
    converter = data_converter(Settings(encryption_key=SecretStr(KEY_A)))
    from temporalio.api.failure.v1 import Failure

    failure = Failure()
    await converter.encode_failure(ApplicationError(f"no case for {EMAIL}", "not_found"), failure)
    assert EMAIL.encode() not in failure.SerializeToString()
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"no case for {EMAIL}"


# ---- the case store: SQL errors name no parameters ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[str]]:
    """A new, empty database of each backend (as ``tests/test_store.py``'s ``backend``)."""
    if request.param == "postgresql":
        return cast(
            Callable[[], Awaitable[str]], request.getfixturevalue("postgres_databases").create
        )

    async def sqlite() -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"

    return sqlite


async def test_a_failing_statement_names_no_parameter_values(
    fresh_store_url: Callable[[], Awaitable[str]],
) -> None:
    url = await fresh_store_url()
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT)"))
            insert = text("INSERT INTO contacts (id, email) VALUES (:id, :email)")
            await conn.execute(insert, {"id": 1, "email": EMAIL})
            with pytest.raises(IntegrityError) as raised:
                await conn.execute(insert, {"id": 1, "email": "zelda.second@alma.example"})
    finally:
        await engine.dispose()
    said = str(raised.value)
    assert "INSERT INTO contacts" in said  # the statement is named ...
    assert "zelda.second" not in said  # ... its values are not
    assert "hidden due to hide_parameters" in said


# ---- search attributes -------------------------------------------------------------------------


def test_search_attributes_carry_no_personal_data() -> None:
    # Search attributes are never encrypted (no codec sees them), so they may hold only what is
    # not personal: the lifecycle's own values, the institution and product (organisations and
    # products, not people), a release id and a deadline. A new attribute must be added here,
    # after checking that it holds no name, address or text.
    assert [k.name for k in search.ALL_KEYS] == [
        "CaseStatus",
        "CasePriority",
        "CaseInstitution",
        "CaseProduct",
        "CaseRelease",
        "CaseOwnerTier",
        "CaseNextDeadline",
    ]
    case = CaseInput(
        case_number="00999001",
        institution="Alma University",
        product="Alma",
        priority="high",
        title=TITLE,
        contact_email=EMAIL,
        opened_by=ZELDA,
    )
    state = lifecycle.open_case(case, datetime(2026, 11, 30, tzinfo=UTC)).state
    values = search.case_values(lifecycle.case_record(state), datetime(2026, 12, 1, tzinfo=UTC))
    shown = json.dumps(values, default=str)
    for secret in [*SECRETS, "zelda", "quixote", "4471"]:
        assert secret.lower() not in shown.lower()
    assert values["CaseInstitution"] == "Alma University"
    assert values["CaseStatus"] in {str(s) for s in Status}


# ---- a real dev server: what Temporal holds, and what the codec server shows ------------------


def keyed(env: Any, **settings: Any) -> Client:
    """A client of the session's dev server with the project's data converter for ``settings``."""
    converter = data_converter(Settings(**settings))
    return Client(**{**env.client.config(), "data_converter": converter})


@contextlib.asynccontextmanager
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    """The project's worker on ``client`` (and so its data converter) until the block ends: a
    new one starts with an empty cache, so it replays each case's history from the server."""
    from worker import build_worker

    await upgrade(settings.database_url)
    store = CaseStore(settings.database_url)
    try:
        async with build_worker(client, settings, store):
            yield
    finally:
        await store.dispose()


async def raw_bytes(env: Any, number: str) -> bytes:
    """Everything Temporal holds and answers about a case, as it holds it: the history, the
    description (memo, summary, details) and the current details' query answer."""
    client = env.client
    execution = WorkflowExecution(workflow_id=case_workflow_id(number))
    history = await client.get_workflow_handle(case_workflow_id(number)).fetch_history()
    described = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=execution)
    )
    details = await client.workflow_service.query_workflow(
        QueryWorkflowRequest(
            namespace=client.namespace,
            execution=execution,
            query=WorkflowQuery(query_type="__temporal_workflow_metadata"),
        )
    )
    return b"".join(
        [
            *(e.SerializeToString() for e in history.events),
            described.SerializeToString(),
            details.SerializeToString(),
        ]
    )


async def input_encodings(env: Any, number: str) -> list[tuple[str, bytes, bytes]]:
    """Each event's first input payload, in order: (event type, encoding, key id)."""
    history = await env.client.get_workflow_handle(case_workflow_id(number)).fetch_history()
    found = []
    for event in history.events:
        kind = EventType.Name(event.event_type)
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            payloads = event.workflow_execution_signaled_event_attributes.input.payloads
        elif event.HasField("activity_task_scheduled_event_attributes"):
            payloads = event.activity_task_scheduled_event_attributes.input.payloads
        elif event.HasField("marker_recorded_event_attributes"):
            details = event.marker_recorded_event_attributes.details
            payloads = details["result"].payloads if "result" in details else []
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            accepted = event.workflow_execution_update_accepted_event_attributes
            payloads = accepted.accepted_request.input.args.payloads
        else:
            continue
        if payloads:
            meta = payloads[0].metadata
            found.append((kind, meta["encoding"], meta.get(KEY_ID, b"")))
    return found


async def open_zeldas_case(case: Case) -> None:
    await case.open(title=TITLE, contact_email=EMAIL, opened_by=ZELDA)
    await case.to("Tier 1 Analysis", TIER1, note=NOTE)
    await case.to("Pending Customer Response", TIER1)
    await case.reply(COMMENT, actor=ZELDA)


async def test_with_a_key_temporal_holds_no_personal_data_in_the_clear(
    env: Any, worker_settings: Settings, unique: Callable[[str], str], inbox: Any
) -> None:
    client = keyed(env, encryption_key=KEY_A)
    case = Case(env, worker_settings.task_queue, unique("enc"))
    case.client = CaseClient(client, worker_settings.task_queue)
    async with worker(client, worker_settings):
        await open_zeldas_case(case)
        snap = await case.wait_status("Waiting for Process")
        # Rejections still read as they did: their message and reason decrypt on the way back.
        with pytest.raises(CaseRejected) as rejected:
            await case.to("Closed", TIER1)
        assert rejected.value.reason == "not_allowed"
        await inbox.wait_for(Subject="comment")  # the worker read the comment to mail it
        held = await raw_bytes(env, case.number)  # the query needs the worker

    assert snap.status == "Waiting for Process"
    assert len(held) > 5_000
    for secret in SECRETS:
        assert secret.encode() not in held, f"{secret!r} is in Temporal in the clear"
    assert b"binary/encrypted" in held
    encodings = await input_encodings(env, case.number)
    assert encodings and all(enc == ENCODING for _, enc, _ in encodings), encodings


async def test_a_case_opened_before_the_key_goes_on_after_it(
    env: Any, worker_settings: Settings, unique: Callable[[str], str], inbox: Any
) -> None:
    case = Case(env, worker_settings.task_queue, unique("before"))
    async with worker(env.client, worker_settings):  # no key: plain JSON
        await case.open(title=TITLE, contact_email=EMAIL, opened_by=ZELDA)
        await case.to("Tier 1 Analysis", TIER1)

    client = keyed(env, encryption_key=KEY_A)
    case.client = CaseClient(client, worker_settings.task_queue)
    async with worker(client, worker_settings):  # restarted with the key: replays plain history
        snap = await case.to("Pending Customer Response", TIER1, note=NOTE)
        assert snap.status == "Pending Customer Response"
        assert [str(h.to_status) for h in snap.history] == [
            "New",
            "Tier 1 Analysis",
            "Pending Customer Response",
        ]
        # Its email went out (the relay sends what the record wrote).
        await inbox.wait_for(Subject="information requested", timeout=60)
    encodings = await input_encodings(env, case.number)
    assert encodings[0][:2] == ("EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", b"json/plain")
    # Everything from the keyed worker's first event on is encrypted: the update, its effects.
    since = [enc for _, enc, _ in encodings].index(ENCODING)
    assert {enc for _, enc, _ in encodings[:since]} == {b"json/plain"}
    assert {enc for _, enc, _ in encodings[since:]} == {ENCODING}, encodings
    assert encodings[since][0] == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"
    # The record of the change: a local activity, its answer in the marker.
    assert "EVENT_TYPE_MARKER_RECORDED" in [kind for kind, _, _ in encodings[since:]]


async def test_plain_json_from_another_system_moves_an_encrypted_case(
    env: Any, worker_settings: Settings, unique: Callable[[str], str]
) -> None:
    client = keyed(env, encryption_key=KEY_A)
    case = Case(env, worker_settings.task_queue, unique("plain"))
    case.client = CaseClient(client, worker_settings.task_queue)
    async with worker(client, worker_settings):
        await open_zeldas_case(case)
        await case.wait_status("Waiting for Process")
        # As the HTTP API or `temporal workflow signal` without a codec send it: plain JSON.
        other_system = env.client.get_workflow_handle(case_workflow_id(case.number))
        await other_system.signal(
            "transition", {"to": "Tier 1 Analysis", "actor": {"role": "tier1", "name": "Tom"}}
        )
        snap = await case.wait_status("Tier 1 Analysis")
    assert str(snap.history[-1].to_status) == "Tier 1 Analysis"
    signals = [e for e in await input_encodings(env, case.number) if "SIGNALED" in e[0]]
    assert signals[-1][1] == b"json/plain"


async def test_key_rotation_keeps_old_cases_readable(
    env: Any, worker_settings: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    case = Case(env, worker_settings.task_queue, unique("rot"))
    client_a = keyed(env, encryption_keys_file=write_keys(tmp_path / "a.toml", "A", A=KEY_A))
    case.client = CaseClient(client_a, worker_settings.task_queue)
    async with worker(client_a, worker_settings):
        await case.open(title=TITLE, contact_email=EMAIL, opened_by=ZELDA)
        await case.to("Tier 1 Analysis", TIER1)
    written_with_a = len(await input_encodings(env, case.number))

    rotated = write_keys(tmp_path / "ab.toml", "B", A=KEY_A, B=KEY_B)
    ring_ab = Keyring.from_file(rotated)
    client_ab = keyed(env, encryption_keys_file=rotated)
    case.client = CaseClient(client_ab, worker_settings.task_queue)
    async with worker(client_ab, worker_settings):
        snap = await case.to("Pending Customer Response", TIER1, note=NOTE)
        assert [str(h.to_status) for h in snap.history][-2:] == [
            "Tier 1 Analysis",
            "Pending Customer Response",
        ]
        assert (await case.snapshot()).case_number == case.number
    encodings = await input_encodings(env, case.number)
    assert {kid for _, _, kid in encodings[:written_with_a]} == {b"A"}
    assert len(encodings) > written_with_a
    assert {kid for _, _, kid in encodings[written_with_a:]} == {b"B"}
    # A process that was given only the new key cannot read the old case: keys are kept.
    history = await case.handle.fetch_history()
    opened = history.events[0].workflow_execution_started_event_attributes.input.payloads
    only_b = Keyring.from_file(write_keys(tmp_path / "b.toml", "B", B=KEY_B))
    with pytest.raises(DecryptionError, match="'A'"):
        await EncryptionCodec(only_b).decode(opened)
    assert EMAIL.encode() in (await EncryptionCodec(ring_ab).decode(opened))[0].data


async def test_a_worker_without_the_old_key_stalls_the_case_until_the_key_is_back(
    env: Any, worker_settings: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    case = Case(env, worker_settings.task_queue, unique("lost"))
    client_a = keyed(env, encryption_key=KEY_A)
    case.client = CaseClient(client_a, worker_settings.task_queue)
    async with worker(client_a, worker_settings):
        await case.open(title=TITLE, contact_email=EMAIL, opened_by=ZELDA)
        await case.wait_status("New")
        # Its first effects (the number's claim, the record, the email) done under key A.
        opened = client_a.get_workflow_handle(case_workflow_id(case.number))
        for _ in range(600):
            if not (await opened.describe()).raw_description.pending_activities:
                break
            await asyncio.sleep(0.1)

    only_b = keyed(env, encryption_keys_file=write_keys(tmp_path / "b.toml", "B", B=KEY_B))
    handle = env.client.get_workflow_handle(case_workflow_id(case.number))
    async with worker(only_b, worker_settings):
        # A plain event arrives; replaying the case needs key A, which this worker lacks.
        move = {"to": "Tier 1 Analysis", "actor": {"role": "tier1", "name": "Tom One"}}
        await handle.signal("transition", move)
        failed = None
        for _ in range(200):
            events = (await handle.fetch_history()).events
            failed = next(
                (e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED),
                None,
            )
            if failed:
                break
            await asyncio.sleep(0.1)
        assert failed is not None, "the worker without key A never failed the task"

    both = keyed(env, encryption_keys_file=write_keys(tmp_path / "ab.toml", "B", A=KEY_A, B=KEY_B))
    # The task's failure is itself encrypted (with B); decoded, it names the missing key.
    error = await both.data_converter.decode_failure(
        failed.workflow_task_failed_event_attributes.failure
    )
    assert "key 'sha256-" in str(error) and "does not have" in str(error)
    # Left for the next session: once the key is back the case goes on, but after how long
    # varies with the server's retry of the failed task (14 s to over 2 minutes here).


# ---- the codec server over HTTP ------------------------------------------------------------------

UI_ORIGIN = "http://localhost:8233"
TOKEN = "s3cret-codec-token"


@contextlib.asynccontextmanager
async def codec_running(**settings: Any) -> AsyncIterator[str]:
    app = codec_server.from_settings(Settings(**settings), token=TOKEN)
    runner = await codec_server.start(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{codec_server.bound_port(runner)}"
    finally:
        await runner.cleanup()


async def test_the_codec_server_decodes_a_case_for_the_temporal_cli(
    env: Any, worker_settings: Settings, unique: Callable[[str], str]
) -> None:
    client = keyed(env, encryption_key=KEY_A)
    case = Case(env, worker_settings.task_queue, unique("cli"))
    case.client = CaseClient(client, worker_settings.task_queue)
    address = env.client.service_client.config.target_host
    async with (
        worker(client, worker_settings),
        codec_running(encryption_key=KEY_A) as endpoint,
    ):
        await open_zeldas_case(case)
        await case.wait_status("Waiting for Process")
        codec = f"--codec-endpoint {endpoint} --codec-auth 'Bearer {TOKEN}'"
        where = f"--address {address} --workflow-id {case_workflow_id(case.number)}"

        # The README's command, pointed at this server, this case and this codec server.
        [show] = commands(example("codec-show"))
        show = (
            show.replace("localhost:7233", address)
            .replace("http://localhost:8081", endpoint)
            .replace("case-00123456", case_workflow_id(case.number))
            .replace("$CASES_CODEC_TOKEN", TOKEN)
        )
        decoded = await run(show)
        for secret in (EMAIL, TITLE, COMMENT, NAME):
            assert secret in decoded, f"{secret!r} missing from the decoded history"
        undecoded = await run(show.split(" --codec-endpoint")[0])
        assert EMAIL not in undecoded

        # A query answer is decoded for the CLI; a signal it sends is sealed on the way in.
        answer = await run(f"temporal workflow query {where} --name snapshot {codec}")
        assert '"Waiting for Process"' in answer
        assert "Waiting for Process" not in await run(
            f"temporal workflow query {where} --name snapshot"
        )
        move = json.dumps({"to": "Tier 1 Analysis", "actor": {"role": "tier1", "name": NAME}})
        await run(f"temporal workflow signal {where} --name transition --input '{move}' {codec}")
        await case.wait_status("Tier 1 Analysis")
    signals = [e for e in await input_encodings(env, case.number) if "SIGNALED" in e[0]]
    assert signals[-1][1] == ENCODING


async def run(command: str) -> str:
    from tests.test_other_systems import sh

    return await sh(command)


async def test_the_codec_server_answers_the_ui_and_refuses_strangers() -> None:
    [sealed] = await EncryptionCodec(Keyring.single(KEY_A)).encode([plain({"email": EMAIL})])
    body = json.dumps({"payloads": [json_format.MessageToDict(sealed)]})
    async with codec_running(encryption_key=KEY_A) as endpoint, aiohttp.ClientSession() as http:
        # The Web UI's preflight from its own origin is answered; another origin gets no grant.
        async with http.options(
            f"{endpoint}/decode",
            headers={
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            },
        ) as preflight:
            assert preflight.status == 204
            assert preflight.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            assert "x-namespace" in preflight.headers["Access-Control-Allow-Headers"].lower()
        async with http.options(
            f"{endpoint}/decode", headers={"Origin": "http://evil.example"}
        ) as stranger:
            assert "Access-Control-Allow-Origin" not in stranger.headers

        json_headers = {"Content-Type": "application/json", "Origin": UI_ORIGIN}
        async with http.post(f"{endpoint}/decode", data=body, headers=json_headers) as anon:
            assert anon.status == 401
            assert anon.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            assert EMAIL not in await anon.text()

        auth = {**json_headers, "Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
        async with http.post(f"{endpoint}/decode", data=body, headers=auth) as answer:
            assert answer.status == 200
            [payload] = (await answer.json())["payloads"]
        assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
        assert json.loads(base64.b64decode(payload["data"])) == {"email": EMAIL}

        # /encode is the way back: what the UI or the CLI sends a case is sealed like the rest.
        async with http.post(f"{endpoint}/encode", data=json.dumps({"payloads": [payload]}),
                             headers=auth) as encoded:  # fmt: skip
            [again] = (await encoded.json())["payloads"]
        assert base64.b64decode(again["metadata"]["encoding"]) == ENCODING

        async with http.post(f"{endpoint}/decode", data="{not json", headers=auth) as bad:
            assert bad.status == 400


def test_the_codec_server_needs_the_keys() -> None:
    with pytest.raises(EncryptionConfigError, match="needs the keys"):
        codec_server.from_settings(Settings())


def test_the_readme_keys_file_is_what_the_worker_reads(tmp_path: Path) -> None:
    block = example("keys-file")
    block = block.replace('"base64 of 32 random bytes"', f'"{KEY_A}"', 1)
    block = block.replace('"base64 of 32 random bytes"', f'"{KEY_B}"', 1)
    path = tmp_path / "keys.toml"
    path.write_text(block)
    ring = keyring(Settings(encryption_keys_file=path))
    assert ring is not None
    assert ring.current == "2026-11"
    assert set(ring.keys) == {"2026-06", "2026-11"}


# Ctrl-C in a terminal, SIGTERM from a service manager, and SIGINT to a process that a script
# started in the background (which inherits SIGINT ignored): each stops it, with exit code 0.
@pytest.mark.parametrize(
    ("stop", "inherited"),
    [
        (signal.SIGINT, signal.SIG_DFL),
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.SIG_IGN),
    ],
    ids=["ctrl-c", "sigterm", "sigint-to-a-background-job"],
)
async def test_python_m_starter_codec_server_serves_and_stops(
    tmp_path: Path, stop: signal.Signals, inherited: signal.Handlers
) -> None:
    import os
    import sys

    from tests.conftest import free_port

    port = free_port()
    environ = {**os.environ, "CASES_ENCRYPTION_KEY": KEY_A, "CASES_CODEC_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "codec-server", "--port", str(port),
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"http://127.0.0.1:{port}" in line.decode()
        [sealed] = await EncryptionCodec(Keyring.single(KEY_A)).encode([plain(EMAIL)])
        body = json.dumps({"payloads": [json_format.MessageToDict(sealed)]})
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/decode", data=body, headers=auth) as answer,
        ):
            [payload] = (await answer.json())["payloads"]
        assert json.loads(base64.b64decode(payload["data"])) == EMAIL
    finally:
        proc.send_signal(stop)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_python_m_starter_codec_server_without_keys_says_so() -> None:
    import os
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("CASES_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "codec-server",
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "needs the keys" in err.decode()


async def test_a_release_train_schedule_reads_back_with_a_key(
    env: Any, unique: Callable[[str], str]
) -> None:
    # A Schedule keeps its workflow's arguments as the client encoded them: encrypted here.
    from starter.schedules import create_train, delete_train, describe_train, parse_calendar
    from workflows.contract import TrainInput

    client = keyed(env, encryption_key=KEY_A)
    name = unique("sealed")
    train = TrainInput(train=name, release_format=f"{name}-%Y.%m", ships_after="3d")
    await create_train(client, train, parse_calendar("monthly"), task_queue=unique("tq"))
    try:
        described = await describe_train(client, name)
        assert described is not None
        assert (described.release_format, described.ships_after) == (
            f"{name}-%Y.%m",
            "3d",
        )
    finally:
        await delete_train(client, name)


async def test_the_embedded_servers_web_ui_is_pointed_at_the_codec_server(tmp_path: Path) -> None:
    from runtime.devserver import DevServer, DevServerConfig
    from tests.conftest import free_port

    settings = Settings(
        data_dir=tmp_path,
        dev_server_port=free_port(),
        ui_port=free_port(),
        http_port=free_port(),
        ui_codec_endpoint="http://localhost:8081",
    )
    server = DevServer(DevServerConfig.from_settings(settings))
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.config.ui_url}/api/v1/settings") as answer,
        ):
            ui_settings = await answer.json()
    finally:
        await server.stop()
    assert ui_settings["Codec"]["Endpoint"] == "http://localhost:8081"


@pytest.mark.parametrize("where", ["embedded", "address"])
async def test_python_worker_py_with_a_bad_key_says_so_in_one_line(
    tmp_path: Path, where: str
) -> None:
    from tests.conftest import free_port
    from tests.test_embedded_server import WorkerProcess, gone, worker_env

    data_dir = tmp_path / ".data"
    extra = {"CASES_ENCRYPTION_KEY": base64.b64encode(b"short").decode()}
    if where == "address":
        extra["TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    worker = await WorkerProcess(worker_env(data_dir, **extra)).start()
    assert await worker.exited(within=60) == 1
    assert [line for line in worker.lines if line.startswith("error:")] == [
        "error: bad encryption settings: CASES_ENCRYPTION_KEY is 5 bytes; an AES-256 key is 32 "
        "(make one with: openssl rand -base64 32)"
    ], worker.output
    assert await gone(str(data_dir))  # the embedded server it started is stopped again
