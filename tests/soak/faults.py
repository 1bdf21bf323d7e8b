"""Seeded random faults, overlapping at random, and the rig they strike.

Each fault kind is one of the reliability suite's (tests/reliability/): kill -9 of every worker,
kill -9 of one worker of two, the Temporal server stopped (SIGTERM) and started again on the
same SQLite file, the SMTP server down, PostgreSQL cut through the TCP proxy. A kind never
overlaps itself; different kinds overlap freely.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.devserver import DevServer, DevServerConfig
from tests.conftest import SmtpSink, free_port
from tests.reliability.harness import WorkerProcess
from tests.reliability.tcp_proxy import TcpProxy

# (kind, shortest and longest outage in seconds, mean gap between two of the kind, in seconds)
KINDS: dict[str, tuple[float, float, float]] = {
    "kill9_all_workers": (2, 20, 150),
    "kill9_one_of_two_workers": (2, 30, 90),
    "server_sigterm_restart": (2, 15, 180),
    "smtp_down": (5, 60, 120),
    "postgresql_cut": (3, 30, 120),
}


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the start of the soak
    kind: str
    seconds: float  # how long it lasts
    target: int = 0  # which worker, for a kill of one

    def __str__(self) -> str:
        who = f" worker {self.target}" if self.kind == "kill9_one_of_two_workers" else ""
        return f"t+{self.at:7.1f}s {self.kind}{who} for {self.seconds:.1f}s"


def schedule(seed: int, start: float, end: float, store: str) -> list[Fault]:
    """The faults of a run: a Poisson arrival per kind between ``start`` and ``end``."""
    rng = random.Random(f"{seed}:faults")
    out = []
    for kind, (shortest, longest, gap) in KINDS.items():
        if kind == "postgresql_cut" and store != "postgresql":
            continue
        at = start + rng.expovariate(1 / gap) / 2
        while at < end:
            seconds = round(rng.uniform(shortest, longest), 1)
            seconds = min(seconds, max(end - at, 1.0))
            out.append(Fault(round(at, 1), kind, seconds, rng.randint(0, 1)))
            at += seconds + rng.expovariate(1 / gap)
    return sorted(out, key=lambda f: f.at)


@dataclass
class Rig:
    """The system under test: a Temporal server on a SQLite file, two workers, an SMTP sink, the
    case store (behind a TCP proxy when it is PostgreSQL)."""

    workdir: Path
    database_url: str  # what the workers use (the proxy's port for PostgreSQL)
    inbox: SmtpSink
    proxy: TcpProxy | None
    task_queue: str
    config: DevServerConfig = field(init=False)
    server: DevServer | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    exits: int = 0  # workers that exited by themselves (and were started again)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = DevServerConfig(
            data_dir=self.workdir / "temporal",
            port=free_port(),
            ui_port=free_port(),
            http_port=free_port(),
        )

    @property
    def address(self) -> str:
        return self.config.address

    def note(self, line: str) -> None:
        stamp = f"t+{time.monotonic() - self.started:7.1f}s"
        self.log.append(f"{stamp} {line}")
        print(f"{stamp} {line}", flush=True)

    async def start_server(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = DevServer(self.config)
        await self.server.start(within=120)

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def worker_env(self) -> dict[str, str]:
        from tests.reliability.harness import worker_environment

        return worker_environment(
            TEMPORAL_ADDRESS=self.address,
            CASES_TASK_QUEUE=self.task_queue,
            CASES_DATABASE_URL=self.database_url,
            CASES_SMTP_URL=self.inbox.url,
            CASES_POLICY_SHORTEST="1s",
        )

    async def start_workers(self, count: int = 2) -> None:
        for i in range(count):
            self.workers.append(
                WorkerProcess(f"w{i}", self.worker_env(), self.workdir / f"worker-{i}.log")
            )
        for worker in self.workers:
            worker.start()
        await asyncio.gather(*(w.ready(120) for w in self.workers))

    def ensure_workers(self) -> None:
        """A worker that exited on its own is started again, as a supervisor would (one started
        while PostgreSQL is cut exits: its schema check at start cannot connect)."""
        for worker in self.workers:
            if worker.process is not None and not worker.running() and worker.process.returncode:
                code = worker.process.returncode
                if code != -9:
                    last = worker.tail(1).strip()[-160:]
                    self.note(f"worker {worker.name} exited by itself ({code}: {last}); restarted")
                    self.exits += 1
                    worker.start()

    async def strike(self, fault: Fault) -> None:
        lock = self._locks.setdefault(fault.kind, asyncio.Lock())
        async with lock:
            self.note(f"fault begins: {fault}")
            await getattr(self, fault.kind)(fault)
            self.note(f"fault ends: {fault.kind}")

    async def kill9_all_workers(self, fault: Fault) -> None:
        killed = [w for w in self.workers if w.running()]
        for worker in killed:
            worker.kill()
        await asyncio.sleep(fault.seconds)
        await self._restart(killed)

    async def kill9_one_of_two_workers(self, fault: Fault) -> None:
        worker = self.workers[fault.target % len(self.workers)]
        if not worker.running():
            return  # already down (another fault): nothing to kill
        worker.kill()
        await asyncio.sleep(fault.seconds)
        await self._restart([worker])

    async def _restart(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if not worker.running():
                worker.start()
        for worker in workers:
            try:
                await worker.ready(120)
            except AssertionError:
                self.note(f"worker {worker.name} did not come back; the supervisor restarts it")

    async def server_sigterm_restart(self, fault: Fault) -> None:
        await self.stop_server()  # SIGTERM, as an orderly shutdown
        await asyncio.sleep(fault.seconds)
        await self.start_server()

    async def smtp_down(self, fault: Fault) -> None:
        self.inbox.stop()
        await asyncio.sleep(fault.seconds)
        self.inbox.start()

    async def postgresql_cut(self, fault: Fault) -> None:
        assert self.proxy is not None
        self.proxy.cut()
        await asyncio.sleep(fault.seconds)
        await self.proxy.restore()

    async def shutdown(self) -> None:
        for worker in self.workers:
            await worker.stop(20)
        await self.stop_server()
        self.inbox.stop()
        if self.proxy is not None:
            await self.proxy.stop()
