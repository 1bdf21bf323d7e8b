"""Tier 1 and Tier 2: handoffs, internal requests for information, and the owner tier that a
case goes back to after waiting for the customer or a vendor."""

from __future__ import annotations

import pytest

from starter.client import CaseRejected
from tests.scenario import KB, TIER1, TIER2, Case


async def test_the_tier_loop_keeps_the_owner_tier(env, case_worker, worker_settings, unique):
    case = await Case(env, worker_settings.task_queue, unique("tiers")).open()
    snap = await case.to("Tier 1 Analysis", TIER1)
    assert snap.owner_tier == 1

    snap = await case.handoff(2, "deeper_analysis", TIER1, note="needs the loan rules expert")
    assert (snap.status, snap.owner_tier) == ("Tier 2 New", 2)
    await case.to("Tier 2 Analysis", TIER2)
    await case.to("Tier 2 W4I", TIER2)  # Tier 2 asks Tier 1 for information
    await case.to("Tier 1 Answer to Tier 2", TIER1)
    await case.to("Tier 2 Analysis", TIER2)

    # While Tier 2 owns the case, the customer's answer goes back to Tier 2.
    await case.to("Pending Customer Response", TIER2)
    await case.reply("Configuration export attached.")
    with pytest.raises(CaseRejected, match="owner tier"):
        await case.to("Tier 1 Analysis", TIER1)
    snap = await case.to("Tier 2 Analysis", TIER2)
    assert snap.owner_tier == 2

    snap = await case.handoff(1, "answered: a known configuration issue", TIER2)
    assert (snap.status, snap.owner_tier) == ("Tier 2 Closed", 1)
    snap = await case.to("Tier 1 Analysis", TIER1)
    assert snap.owner_tier == 1

    # Vendor input: the KB team may take the case back to its owner.
    await case.to("Waiting for Vendor Input", TIER1)
    snap = await case.to("Tier 1 Analysis", KB)
    assert snap.status == "Tier 1 Analysis"
    history = [(h.from_status, h.to_status) for h in snap.history]
    assert ("Tier 1 Analysis", "Tier 2 New") in history and (
        "Tier 2 Analysis",
        "Tier 2 Closed",
    ) in history


async def test_a_handoff_to_tier2_needs_one_of_the_three_reasons(
    env, case_worker, worker_settings, unique
):
    case = await Case(env, worker_settings.task_queue, unique("reason")).open()
    await case.to("Tier 1 Analysis", TIER1)
    with pytest.raises(CaseRejected, match="consult, deeper_analysis, defect_verification"):
        await case.client._update(
            case.number,
            "tier_handoff",
            {"to_tier": 2, "reason": "because", "note": "", "actor": TIER1.model_dump()},  # type: ignore[arg-type]
        )
    with pytest.raises(CaseRejected, match="tier handoff"):
        await case.to("Tier 2 New", TIER1)  # a handoff, not a plain transition
    assert (await case.snapshot()).status == "Tier 1 Analysis"
