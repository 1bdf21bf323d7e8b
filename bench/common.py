"""What every benchmark shares: a dev server of its own, workers as subprocesses, the machine's
load, and the results (a markdown table on stdout, JSON under ``bench/results/``).

Everything runs on loopback: the dev server listens on 127.0.0.1 on a free port and is in
memory (nothing persists between runs) unless a benchmark gives it a SQLite file. Each worker
is its own process, so its CPU time and RSS are its own and the driver (this process) does not
share its interpreter lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from runtime.connection import temporal_cli
from workflows import search

ROOT = Path(__file__).resolve().parent.parent
# Where worker processes import the project from: another checkout (``BENCH_WORKER_ROOT``) runs
# a before/after comparison against the same driver.
WORKER_ROOT = Path(os.environ.get("BENCH_WORKER_ROOT", ROOT))
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


def load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cli = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True, check=False)
    import temporalio

    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": cli.stdout.strip(),
        "kernel": platform.release(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "bench": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


async def bounded(limit: int, coros: Iterable[Any]) -> list[Any]:
    """Run coroutines with at most ``limit`` in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# ---- the dev server -------------------------------------------------------------------------


@dataclass
class Server:
    env: WorkflowEnvironment
    address: str
    process: psutil.Process | None

    @property
    def client(self) -> Client:
        return self.env.client

    def cpu(self) -> float:
        return _cpu(self.process)


@asynccontextmanager
async def dev_server(
    extra_args: Sequence[str] = (), db_file: Path | None = None
) -> AsyncIterator[Server]:
    """``temporal server start-dev`` headless, on a free loopback port, with the project's
    search attributes; the JSON payload converter the project uses. In memory, or persisted to
    the SQLite file ``db_file`` as ``make run`` starts it (``runtime.devserver``)."""
    port = free_port()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search.ALL_KEYS,
        ip="127.0.0.1",
        port=port,
        ui=False,
        dev_server_database_filename=str(db_file) if db_file else None,
        dev_server_extra_args=list(extra_args),
    )
    spawned = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    server = next((p for p in spawned if "temporal" in p.name()), None)
    try:
        yield Server(env, f"127.0.0.1:{port}", server)
    finally:
        await env.shutdown()


# ---- workers as subprocesses ----------------------------------------------------------------


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return float("nan")
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return float("nan")


@dataclass
class WorkerProcess:
    """``python -m bench.worker_proc``: the project's worker (``engine``), the project's workflows
    with no-op activities (``engine-noop``) or the bare comparison (``bare``)."""

    kind: str
    address: str
    task_queue: str
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    process: psutil.Process | None = None

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.workdir / f'cases-{self.task_queue}.db'}"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"worker-{self.task_queue}.log"

    async def start(self, within: float = 60.0) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / f"ready-{self.task_queue}"
        ready.unlink(missing_ok=True)
        command = [
            PYTHON,
            "-m",
            "bench.worker_proc",
            "--kind",
            self.kind,
            "--address",
            self.address,
            "--task-queue",
            self.task_queue,
            "--database-url",
            self.database_url,
            "--options",
            json.dumps(self.options),
            "--ready-file",
            str(ready),
        ]
        env = {**os.environ, **self.env}
        env.pop("TEMPORAL_ADDRESS", None)
        self.popen = self._spawn(command, env)
        self.process = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + within
        while not ready.exists():
            if self.popen.poll() is not None:
                raise RuntimeError(f"worker {self.kind} exited: see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.kind} not ready within {within} s")
            await asyncio.sleep(0.05)
        return self

    def _spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                command,
                cwd=WORKER_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
            )

    def cpu(self) -> float:
        return _cpu(self.process)

    def rss(self) -> int:
        assert self.process is not None
        return int(self.process.memory_info().rss)

    async def quiesce(
        self, idle: float = 0.05, window: float = 1.0, within: float = 600.0
    ) -> float:
        """Wait until the worker used under ``idle`` of a core for a ``window``; the seconds
        waited. A worker that never settles raises after ``within``."""
        started = time.monotonic()
        while True:
            before = self.cpu()
            await asyncio.sleep(window)
            if (self.cpu() - before) / window < idle:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"worker {self.kind} still busy after {within} s")

    def troubles(self) -> dict[str, int]:
        """Counts of the worker log's signs of overload: failed activity attempts, workflow
        tasks that took over 5 s, and tasks the server had already timed out."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return {}
        return {
            "activity_attempts_failed": text.count("Completing activity as failed"),
            "workflow_tasks_over_5s": text.count("Workflow task duration exceeded"),
            "workflow_tasks_timed_out": text.count("Workflow task not found"),
        }

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _die_with_parent(parent: int) -> Any:
    """A ``preexec_fn``: the worker gets SIGTERM should the bench die (Linux prctl)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def policy_env(shortest_s: float) -> dict[str, str]:
    """The worker environment that lets cases open with a policy span of ``shortest_s``: a
    worker refuses spans under ``CASES_POLICY_SHORTEST`` (1 minute unless lowered)."""
    if shortest_s >= 60:
        return {}
    return {"CASES_POLICY_SHORTEST": f"{max(1, int(shortest_s))}s"}


@asynccontextmanager
async def worker_process(
    kind: str,
    server: Server,
    task_queue: str,
    workdir: Path,
    options: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[WorkerProcess]:
    worker = WorkerProcess(kind, server.address, task_queue, workdir, options or {}, env or {})
    await worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@dataclass
class Usage:
    """CPU seconds of the worker and the server, and wall seconds, over one measured phase."""

    wall: float
    worker_cpu: float
    server_cpu: float


@asynccontextmanager
async def measured(worker: WorkerProcess, server: Server) -> AsyncIterator[list[Usage]]:
    out: list[Usage] = []
    w0, s0, t0 = worker.cpu(), server.cpu(), time.monotonic()
    yield out
    out.append(Usage(time.monotonic() - t0, worker.cpu() - w0, server.cpu() - s0))


def banner(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] load {load()[0]:.2f} · {text}", flush=True)
