"""The generated lifecycle page: current, complete, Mermaid-safe, and free of Temporal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from workflows import diagram
from workflows.contract import DeadlinePolicy, Status
from workflows.lifecycle import rules

ROOT = Path(__file__).resolve().parent.parent


def test_docs_lifecycle_md_is_current():
    path = ROOT / "docs" / "lifecycle.md"
    stale = "docs/lifecycle.md is stale: run `make docs` (python -m workflows.diagram --write)"
    assert path.exists(), stale
    assert path.read_text(encoding="utf-8") == diagram.render(), stale


def test_every_status_appears_with_its_exact_label():
    text = diagram.mermaid()
    for status in Status:
        assert f'state "{status}" as {diagram.state_id(status)}' in text
        assert f"`{status}`" in diagram.rules_table()
    # Every status has an edge in or out.
    edges = [line.split(" : ")[0].split(" --> ") for line in text.splitlines() if "-->" in line]
    touched = {name.strip() for pair in edges for name in pair}
    assert {diagram.state_id(s) for s in Status} <= touched


def test_state_ids_are_mermaid_safe_and_unique():
    ids = [diagram.state_id(s) for s in Status]
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert diagram.state_id(Status.TIER1_ANSWER_TO_TIER2) == "Tier1AnswerToTier2"


def test_edge_labels_name_roles_and_how():
    lines = set(diagram.mermaid().splitlines())
    expected = [
        "[*] --> New : customer, tier1 · open",
        "New --> Tier1Analysis : tier1",
        "Tier1Analysis --> Tier2New : tier1 · handoff",
        "Tier2Analysis --> Tier2Closed : tier2 · handoff",
        "PendingCustomerResponse --> WaitingForProcess : customer · reply",
        "PendingCustomerResponse --> Closing : system · after 28d",
        "Closing --> Closed : system · after 14d",
        "Closing --> Closed : customer",
        "PendingWorkPlan --> Closing : system · after 24mo",
        "PendingRelease --> Closing : system · 14d after ship",
        "PendingCustomerTesting --> Closed : system · after 11mo",
        # Guards narrow the roles: the owner's tier, kb_team only from vendor input.
        "WaitingForProcess --> Tier1Analysis : tier1 · owner tier",
        "WaitingForVendorInput --> Tier2Analysis : tier2, kb_team · owner tier",
        "Closing --> PendingCustomerTesting : customer · came from Pending Release",
        # Edition 2: the owner tier's analyst sets Pending Release, Development alone decides
        # Pending Work Plan, and testing waits for the ship.
        "Development --> PendingRelease : tier1, tier2 · owner tier, with release_id",
        "Development --> PendingWorkPlan : development · normal/low, one institution",
        "PendingRelease --> PendingCustomerTesting : customer · after the ship",
        "Closed --> [*]",
    ]
    for line in expected:
        assert f"    {line}" in lines, line


def test_one_edge_per_source_target_of_each_rule():
    count = sum(len(r.sources) * len(r.targets) for r in rules())
    assert len(diagram.edges()) == count
    assert diagram.mermaid().count(" --> ") == count + 2  # plus open and final


def test_the_rules_table_has_one_row_per_rule():
    rows = diagram.rules_table().splitlines()
    assert rows[0] == "| from | to | who | via | note |"
    assert len(rows) == 2 + 1 + len(rules())  # header, separator, the open row, the rules
    assert (
        "| `Development` | `Pending Release` | tier1, tier2 | `transition` "
        "| the Support analyst that owns the case; needs release_id |" in rows
    )
    assert (
        "| `Development` | `Pending Work Plan` | development | `transition` "
        "| Development decides; normal or low priority, one institution |" in rows
    )


def test_moves_the_guide_gives_to_others_are_not_drawn():
    """Tier 2 does not set Pending Work Plan, Development does not set Pending Release, and
    testing waits for the ship: no such edge in the picture."""
    lines = set(diagram.mermaid().splitlines())
    assert (
        "    Tier2Analysis --> PendingWorkPlan : tier2, development · normal/low, one institution"
        not in lines
    )
    assert "    Development --> PendingRelease : development · with release_id" not in lines
    assert "    PendingRelease --> PendingCustomerTesting : customer" not in lines


def test_labels_follow_the_policy():
    demo = DeadlinePolicy(pcr_reminder="2min", pcr_closing="4min", closing_closed="3min")
    text = diagram.render(demo)
    assert "PendingCustomerResponse --> Closing : system · after 4min" in text
    assert "Closing --> Closed : system · after 3min" in text
    assert "after 2min, reminder email" in text


def test_write_and_check(tmp_path, monkeypatch, capsys):
    target = tmp_path / "docs" / "lifecycle.md"
    monkeypatch.setattr(diagram, "DOC_PATH", target)
    assert diagram.main(["--check"]) == 1
    assert "make docs" in capsys.readouterr().err
    assert diagram.main(["--write"]) == 0
    assert target.read_text(encoding="utf-8") == diagram.render()
    assert diagram.main(["--check"]) == 0


def test_the_module_prints_the_page_without_importing_temporal():
    printed = subprocess.run(
        [sys.executable, "-m", "workflows.diagram"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == diagram.render()
    probe = (
        "import sys, workflows.diagram; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
