"""Take the README's screenshots of the Temporal Web UI with headless Chromium.

``make screenshot`` (or ``python docs/screenshot.py``) starts the embedded dev server on free
ports with a throwaway data directory, runs the worker in this process, opens a handful of cases
in different statuses, then drives the system's ``chromium`` (Debian package; nothing is
downloaded) over the DevTools protocol on a pipe: it sets the workflow list's columns to the case
search attributes (the UI keeps them in the browser's local storage, as "Configure Columns"
does), opens the list filtered to the cases, and writes

- ``docs/ui-cases.png``: the cases with CaseStatus, CasePriority, CaseInstitution, ...
- ``docs/ui-case.png``: one case's page (summary, details, current details).

``python docs/screenshot.py codec`` writes only ``docs/ui-codec.png``: the same cases with
payload encryption on, one case's page as the Web UI shows it decoded through the codec server
(``python -m starter codec-server``; the dev server's ``--ui-codec-endpoint``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.devserver import DevServer, DevServerConfig  # noqa: E402
from settings import Settings  # noqa: E402
from starter.client import CaseClient  # noqa: E402
from starter.demo import DEV, TIER1, TIER2, customer_of, demo_case  # noqa: E402
from workflows.contract import (  # noqa: E402
    Actor,
    CustomerReply,
    Priority,
    Status,
    TierHandoff,
    TransitionRequest,
)

WIDTH, HEIGHT = 1800, 900
COLUMNS = [
    "Status",
    "Workflow ID",
    "CaseStatus",
    "CasePriority",
    "CaseInstitution",
    "CaseOwnerTier",
    "CaseNextDeadline",
]
QUERY = 'WorkflowType = "SupportCase"'

# (case number, institution, priority, title, how far it goes)
CASES: list[tuple[str, str, Priority, str, str]] = [
    ("00123456", "Alma University", Priority.NORMAL, "Loans report shows wrong totals", "pcr"),
    ("00123457", "Borealis College", Priority.HIGH, "Login page times out", "closing"),
    ("00123458", "Cedar Library", Priority.NORMAL, "Fine calculation off by one day", "release"),
    ("00123459", "Dunmore Institute", Priority.LOW, "Add a due-date column", "work_plan"),
    ("00123460", "Elm State University", Priority.NORMAL, "Import fails on UTF-8", "replied"),
    ("00123461", "Fjord Academy", Priority.CRITICAL, "Search index out of date", "tier2"),
    ("00123462", "Alma University", Priority.NORMAL, "Typo in the loan receipt", "closed"),
    ("00123463", "Granite College", Priority.HIGH, "Patron sync stopped", "new"),
]


async def open_cases(cases: CaseClient) -> None:
    for number, institution, priority, title, story in CASES:
        customer = customer_of(institution)
        await cases.open(demo_case(number, institution, priority, title, customer))

        async def to(status: Status, actor: Actor, number: str = number, **kw: Any) -> None:
            await cases.transition(number, TransitionRequest(to=status, actor=actor, **kw))

        if story == "new":
            continue
        await to(Status.TIER1_ANALYSIS, TIER1)
        if story in ("pcr", "replied"):
            await to(Status.PENDING_CUSTOMER_RESPONSE, TIER1, note="please send the report")
        if story == "replied":
            await cases.reply(number, CustomerReply(text="Attached.", actor=customer))
        if story in ("closing", "closed"):
            await to(Status.CLOSING, TIER1, note="fixed in the configuration")
        if story == "closed":
            await to(Status.CLOSED, customer)
        if story in ("release", "work_plan", "tier2"):
            reason = {"release": "defect_verification", "work_plan": "consult"}.get(
                story, "deeper_analysis"
            )
            await cases.handoff(number, TierHandoff(to_tier=2, reason=reason, actor=TIER1))
            await to(Status.TIER2_ANALYSIS, TIER2)
        if story == "release":
            await to(Status.DEVELOPMENT, TIER2)
            await to(Status.PENDING_RELEASE, TIER2, release_id="2026.12")  # the owner analyst
        if story == "work_plan":
            await to(Status.DEVELOPMENT, TIER2)
            await to(Status.PENDING_WORK_PLAN, DEV)  # Development decides
        if story == "tier2":
            await to(Status.TIER2_W4I, TIER2, note="which index profile is used?")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_pipes() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire_pipes,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(raw))

    def open_page(self) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, until_text: list[str], within: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(until_text, within, url)

    def wait_for(self, until_text: list[str], within: float = 30.0, url: str = "") -> None:
        deadline = time.monotonic() + within
        check = " && ".join(
            f"document.body.innerText.includes({json.dumps(t)})" for t in until_text
        )
        while time.monotonic() < deadline:
            if self.evaluate(f"!!document.body && ({check})"):
                time.sleep(1.0)  # let the last rows and fonts settle
                return
            time.sleep(0.2)
        shown = str(self.evaluate("document.body ? document.body.innerText : ''"))[:2000]
        self.screenshot(Path(tempfile.gettempdir()) / "cases-screenshot-failed.png")
        raise RuntimeError(f"{url} never showed {until_text}; it shows: {shown!r}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.call("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def shoot(ui: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is missing: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="cases-chromium-") as profile:
        browser = Browser(chromium, Path(profile))
        try:
            browser.open_page()
            browser.goto(f"{ui}/namespaces/default/workflows", ["Workflows"])
            columns = {"default": [{"label": label} for label in COLUMNS]}
            browser.evaluate(
                "localStorage.setItem('namespace-workflow-table-columns', "
                f"{json.dumps(json.dumps(columns))})"
            )
            listing = f"{ui}/namespaces/default/workflows?query={quote(QUERY)}"
            browser.goto(listing, ["case-00123456", "Pending Customer Response", "CaseStatus"])
            browser.screenshot(ROOT / "docs" / "ui-cases.png")
            browser.goto(
                f"{ui}/namespaces/default/workflows/case-00123456",
                ["case-00123456", "pcr_reminder: reminder to the customer"],
            )
            browser.screenshot(ROOT / "docs" / "ui-case-timeline.png")
            # The summary, details and current details are on the "User Metadata" tab.
            browser.evaluate(
                "document.querySelector('[data-testid=\"user-metadata-tab\"]').click()"
            )
            browser.wait_for(["Summary", "Current Details"])
            time.sleep(1.5)  # the markdown renders in frames of its own
            browser.screenshot(ROOT / "docs" / "ui-case.png")
        finally:
            browser.close()


def shoot_codec(ui: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is missing: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="cases-chromium-") as profile:
        browser = Browser(chromium, Path(profile))
        try:
            browser.open_page()
            # The summary and the input are encrypted in Temporal: shown only once decoded.
            browser.goto(
                f"{ui}/namespaces/default/workflows/case-00123456",
                ["Loans report shows wrong totals", "contact-00123456@example.org"],
            )
            browser.screenshot(ROOT / "docs" / "ui-codec.png")
        finally:
            browser.close()


async def main_codec() -> None:
    """The cases with a key set; the UI decodes them through the codec server."""
    from runtime.encryption import data_converter, new_key
    from starter import codec_server
    from worker import run_worker

    with tempfile.TemporaryDirectory(prefix="cases-screenshot-") as tmp:
        data = Path(tmp)
        ports = _free_ports(4)
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{data / 'cases.db'}",
            encryption_key=new_key(),
        )
        config = DevServerConfig(
            data_dir=data,
            port=ports[0],
            ui_port=ports[1],
            http_port=ports[2],
            ui_codec_endpoint=f"http://localhost:{ports[3]}",
        )
        app = codec_server.from_settings(settings, origins=[config.ui_url])
        codec = await codec_server.start(app, "127.0.0.1", ports[3])
        server = DevServer(config, converter=data_converter(settings))
        client = await server.start()
        worker = asyncio.create_task(run_worker(client, settings))
        try:
            await open_cases(CaseClient(client, settings.task_queue))
            await asyncio.sleep(1.0)  # visibility catches up
            await asyncio.to_thread(shoot_codec, config.ui_url)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await server.stop()
            await codec.cleanup()


async def main() -> None:
    from worker import run_worker

    with tempfile.TemporaryDirectory(prefix="cases-screenshot-") as tmp:
        data = Path(tmp)
        ports = _free_ports(3)
        server = DevServer(
            DevServerConfig(data_dir=data, port=ports[0], ui_port=ports[1], http_port=ports[2])
        )
        client = await server.start()
        settings = Settings(database_url=f"sqlite+aiosqlite:///{data / 'cases.db'}")
        worker = asyncio.create_task(run_worker(client, settings))
        try:
            await open_cases(CaseClient(client, settings.task_queue))
            await asyncio.sleep(1.0)  # visibility catches up
            await asyncio.to_thread(shoot, server.config.ui_url)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await server.stop()


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    asyncio.run(main_codec() if sys.argv[1:] == ["codec"] else main())
    sys.stdout.flush()
    os._exit(0)  # see worker.run: skip the SDK runtime's finalisation crash
