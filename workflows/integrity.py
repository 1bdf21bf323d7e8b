"""Who may start a run, and with what: the checks a ``SupportCase`` or ``Release`` run makes on
its start input before it does anything (pure; the shells pass in ``workflow.info()``'s ids).

- ``case-<n>`` runs only case ``n``, ``release-<r>`` only release ``r``.
- Carried state is taken only from a continue-as-new of the same workflow: a start from outside
  that carries state would otherwise send any mail to any address and write any row.
"""

from __future__ import annotations

from workflows.contract import case_workflow_id, release_workflow_id


def wrong_id(kind: str, name: str, expected: str, workflow_id: str) -> str | None:
    if workflow_id != expected:
        return f"{kind} {name} must run as workflow {expected}, not {workflow_id}"
    return None


def new_case_problem(workflow_id: str, case_number: str) -> str | None:
    """Why a run may not open case ``case_number``, or None."""
    return wrong_id("case", case_number, case_workflow_id(case_number), workflow_id)


def carried_problem(
    kind: str, name: str, expected: str, workflow_id: str, continued_run_id: str | None
) -> str | None:
    """Why a run may not take this carried state, or None."""
    if not continued_run_id:
        return (
            f"a start input that carries state is only taken from a continue-as-new of the "
            f"{kind}'s own workflow; this run was started with it"
        )
    return wrong_id(kind, name, expected, workflow_id)


def carried_case_problem(
    workflow_id: str, continued_run_id: str | None, case_number: str
) -> str | None:
    return carried_problem(
        "case", case_number, case_workflow_id(case_number), workflow_id, continued_run_id
    )


def carried_release_problem(
    workflow_id: str, continued_run_id: str | None, release_id: str
) -> str | None:
    return carried_problem(
        "release", release_id, release_workflow_id(release_id), workflow_id, continued_run_id
    )


def number_taken(case_number: str, owner: str | None) -> str:
    """The failure of a run whose case number another run opened."""
    by = f"run {owner}" if owner else "an earlier run"
    return (
        f"case {case_number} was opened by {by}: a case number names one case for all time; "
        "open a new case that references it"
    )
