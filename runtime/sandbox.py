"""The workflow sandbox, set up as every worker and replayer of the project runs it.

The sandbox executes a workflow's own modules afresh for every run (its globals and classes are
that run's alone, and its calls are checked against the sandbox's restrictions); the pure,
deterministic modules it imports are passed through instead (``PASSTHROUGH``). What a fresh
execution does not need afresh is the compiled code: code objects are immutable, so the
workflow modules' code is unmarshalled once per process and shared by every run
(``share_compiled_code``), which spares each cached case the memory and each start the CPU of
loading it again (bench/README.md, "A cheap cached case").
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any

from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Pure, deterministic modules the sandbox may share instead of re-importing per workflow run:
# re-importing pydantic and the lifecycle for every case is most of the sandbox's cost.
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    "workflows.bounds",
    "workflows.calendar",
    "workflows.contract",
    "workflows.effects",
    "workflows.integrity",
    "workflows.lifecycle",
    "workflows.payloads",
    "workflows.search",
    # Shared, not re-imported: the workflows read the registry the worker installed in it.
    "workflows.trust",
    "jwt",
    "cryptography",
)
# The workflow modules each run executes afresh (checked by the sandbox), their code shared.
WORKFLOW_MODULES = (
    "workflows",
    "workflows.case",
    "workflows.metrics",
    "workflows.release",
    "workflows.train",
)


def workflow_runner(sandboxed: bool = True) -> WorkflowRunner:
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    share_compiled_code(WORKFLOW_MODULES)
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


class _SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader whose modules' code objects are compiled (or read from the cache) once
    per process; every execution of the module still gets fresh globals."""

    _compiled: dict[str, CodeType] = {}

    def get_code(self, fullname: str) -> CodeType:
        code = self._compiled.get(self.path)
        if code is None:
            loaded = super().get_code(fullname)
            assert loaded is not None
            code = self._compiled[self.path] = loaded
        return code


class _SharedCodeFinder:
    """Finds ``names`` as the path finder does, with a loader that shares their code."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _SharedCodeLoader(fullname, spec.loader.path)
        return spec


def share_compiled_code(names: Sequence[str]) -> None:
    """Load ``names`` with shared code objects from now on (idempotent)."""
    if not any(isinstance(f, _SharedCodeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SharedCodeFinder(names))
