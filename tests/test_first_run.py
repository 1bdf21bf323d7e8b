"""A first run on a bare machine: `make test` brings headless Chromium itself when the user may
install packages, and otherwise stops at once with the README's line (the Makefile's
``browser``, which .ci/run reaches through `make test` too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
LINE = "sudo apt-get install -y chromium"


def _tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def _browser(tools: Path) -> subprocess.CompletedProcess[str]:
    """`make browser` on a machine whose only commands are ``tools`` (no Chromium among them)."""
    assert MAKE
    return subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "browser"],
        env={"PATH": str(tools), "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_chromium_nor_the_right_to_install_it_make_test_stops_at_once_with_the_line(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "apt-calls"
    _tool(tmp_path, "id", "echo 1000")  # not root
    _tool(tmp_path, "sudo", "exit 1")  # sudo asks for a password
    _tool(tmp_path, "apt-get", f'echo "$@" >> {calls}; exit 0')
    started = time.monotonic()
    run = _browser(tmp_path)
    assert run.returncode != 0
    assert time.monotonic() - started < 10
    assert LINE in run.stderr
    assert not calls.exists()  # nothing was tried
    readme = (ROOT / "README.md").read_text()
    assert readme.index(LINE) < readme.index("## What is where")  # said before anything else


def test_as_root_make_test_installs_the_debian_package(tmp_path: Path) -> None:
    calls = tmp_path / "apt-calls"
    _tool(tmp_path, "id", "echo 0")
    _tool(tmp_path, "apt-get", f'echo "$@" >> {calls}; exit 0')
    run = _browser(tmp_path)
    assert run.returncode == 0, run.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].split() == ["update", "-qq"]
    assert lines[1].split()[-1] == "chromium" and "install" in lines[1].split()


def test_a_failed_install_fails_the_run(tmp_path: Path) -> None:
    _tool(tmp_path, "id", "echo 0")
    _tool(tmp_path, "apt-get", "exit 100")
    assert _browser(tmp_path).returncode != 0


def test_with_chromium_there_is_nothing_to_do(tmp_path: Path) -> None:
    _tool(tmp_path, "chromium", "exit 0")
    _tool(tmp_path, "apt-get", "exit 100")  # would fail the run if it were called
    assert _browser(tmp_path).returncode == 0


def test_ci_runs_the_same_set_up_and_has_no_copy_of_its_own() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci
    assert "apt-get" not in ci
