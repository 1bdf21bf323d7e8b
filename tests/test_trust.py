"""Trusted senders in the pure core: a proof is accepted exactly when a registered sender, with a
key valid at the case's instant, vouches for this actor on this case and may assert it; anything
else, however forged or truncated, is a clean rejection (``unauthenticated`` or
``not_permitted``), never another exception. No Temporal here."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.signing import Signer, new_key
from workflows import trust
from workflows.contract import (
    Actor,
    CaseInput,
    CustomerReply,
    ReleaseShipped,
    Role,
    Status,
    TransitionRequest,
)
from workflows.lifecycle import Decision, Rejection, decide, open_case

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # trusted senders required from here
REVOKED_AT = T0 + timedelta(days=10)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
ALMA, OTHER = "Alma University", "Other College"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Registered:
    name: str
    kid: str
    private: Ed25519PrivateKey
    roles: tuple[Role, ...]
    institutions: tuple[str, ...]
    not_after: datetime | None = None  # revoked: the key ends here


PORTAL = Registered("portal", "portal-1", Ed25519PrivateKey.generate(), (Role.CUSTOMER,), (ALMA,))
DESK = Registered("desk", "desk-1", Ed25519PrivateKey.generate(), (Role.TIER1, Role.TIER2), ())
OLD_DESK = Registered(
    "old-desk", "old-desk-1", Ed25519PrivateKey.generate(), (Role.TIER1,), (), REVOKED_AT
)
HUB = Registered(
    "hub", "hub-1", Ed25519PrivateKey.generate(), (Role.CUSTOMER, Role.KB_TEAM), ("*",)
)
SENDERS = (PORTAL, DESK, OLD_DESK, HUB)
# A key nobody registered, signing with a registered sender's name and key id.
STRANGER = Registered("portal", "portal-1", Ed25519PrivateKey.generate(), (Role.CUSTOMER,), (ALMA,))


def registry(*senders: Registered, revoked: bool = True) -> trust.TrustedSenders:
    return trust.TrustedSenders.model_validate(
        {
            "required_from": T0.isoformat(),
            "senders": [
                {
                    "name": s.name,
                    "roles": [str(r) for r in s.roles],
                    "institutions": list(s.institutions),
                    "keys": [
                        {
                            "kid": s.kid,
                            "public_key": trust.raw_public_key(s.private.public_key()),
                            "not_before": T0.isoformat(),
                            "not_after": s.not_after.isoformat()
                            if s.not_after and revoked
                            else None,
                        }
                    ],
                }
                for s in senders
            ],
        }
    )


REGISTRY = registry(*SENDERS)


def token(
    sender: Registered,
    actor: Actor,
    case: str = "1",
    event_id: str = "ev-1",
    issued: datetime = T0 + DAY,
    ttl: timedelta = 5 * timedelta(minutes=1),
) -> str:
    return trust.sign(
        sender.private,
        sender=sender.name,
        kid=sender.kid,
        audience=f"case-{case}",
        actor=actor,
        event_id=event_id,
        issued_at=issued,
        ttl=ttl,
    )


def permitted(sender: Registered, actor: Actor) -> bool:
    """The rule, said independently of the code: the role, and for customers the institution."""
    if actor.role not in sender.roles:
        return False
    return actor.role is not Role.CUSTOMER or bool(
        {"*", actor.institution} & set(sender.institutions)
    )


ACTORS = [
    Actor(role=Role.CUSTOMER, name="Ann Reader", institution=ALMA),
    Actor(role=Role.CUSTOMER, name="Oz Other", institution=OTHER),
    Actor(role=Role.TIER1, name="Tom One"),
    Actor(role=Role.TIER2, name="Tess Two"),
    Actor(role=Role.DEVELOPMENT, name="Dev Eloper"),
    Actor(role=Role.KB_TEAM, name="Kay Bee"),
]
# When the event reaches the case, relative to the token's issue instant (T0 + 1 day + offset).
WHEN = {
    "fresh": timedelta(minutes=1),
    "expired": timedelta(minutes=6),
    "after revocation": REVOKED_AT - (T0 + DAY) + timedelta(minutes=1),
}


@pytest.mark.parametrize(
    ("sender", "actor", "case", "when"),
    list(itertools.product(SENDERS, ACTORS, ["1", "2"], WHEN)),
    ids=lambda v: getattr(v, "name", None) or getattr(v, "role", None) or str(v),
)
def test_accepted_exactly_when_permitted(
    sender: Registered, actor: Actor, case: str, when: str
) -> None:
    issued = T0 + DAY if when != "after revocation" else REVOKED_AT
    now = issued + WHEN["fresh" if when == "after revocation" else when]
    proof = token(sender, actor, case="1", issued=issued)
    refused = trust.verify(
        REGISTRY, proof, audience=f"case-{case}", actor=actor, event_id="ev-1", now=now
    )
    authentic = (
        case == "1"
        and when != "expired"
        and not (when == "after revocation" and sender.not_after is not None)
    )
    if authentic and permitted(sender, actor):
        assert refused is None
    elif authentic:
        assert refused is not None and refused.reason == "not_permitted", refused
        assert f"sender {sender.name} may not assert" in refused.message
    else:
        assert refused is not None and refused.reason == "unauthenticated", refused


def test_each_refusal_says_which() -> None:
    tier1 = ACTORS[2]
    now = T0 + DAY + timedelta(minutes=1)

    def why(proof: str | None, actor: Actor = tier1, **kw: object) -> str:
        args: dict = {"audience": "case-1", "actor": actor, "event_id": "ev-1", "now": now} | kw
        refused = trust.verify(REGISTRY, proof, **args)
        assert refused is not None
        return f"{refused.reason}: {refused.message}"

    assert why(None) == "unauthenticated: no proof: trusted senders are required on this case"
    assert "the proof is for case-1, not case-2" in why(token(DESK, tier1), audience="case-2")
    assert "expired at" in why(token(DESK, tier1), now=now + HOUR)
    assert "for event 'ev-1', not 'ev-2'" in why(token(DESK, tier1), event_id="ev-2")
    assert "another actor" in why(token(DESK, ACTORS[3]))  # signed for tier2, names tier1
    assert "not a valid token" in why(token(STRANGER, ACTORS[0]), actor=ACTORS[0])
    assert "issued in the future" in why(token(DESK, tier1, issued=now + HOUR))
    revoked = why(token(OLD_DESK, tier1, issued=REVOKED_AT), now=REVOKED_AT + timedelta(minutes=1))
    assert "key 'old-desk-1' of sender old-desk is not valid at" in revoked
    assert why(token(DESK, ACTORS[4]), actor=ACTORS[4]) == (
        "not_permitted: sender desk may not assert the role development"
    )
    assert why(token(PORTAL, ACTORS[1]), actor=ACTORS[1]) == (
        "not_permitted: sender portal may not assert customers of Other College"
    )


def test_before_required_from_nothing_is_checked() -> None:
    early = T0 - HOUR
    refused = trust.verify(
        REGISTRY, None, audience="case-1", actor=ACTORS[2], event_id=None, now=early
    )
    assert refused is None


def test_a_key_revoked_later_keeps_what_it_signed_before() -> None:
    """Yesterday's event, judged at yesterday's instant, with today's file (the key now ended):
    the same answer, which is what makes replay give the same answer."""
    proof = token(OLD_DESK, ACTORS[2], issued=T0 + DAY)
    at = T0 + DAY + timedelta(minutes=1)
    for file in (registry(*SENDERS, revoked=False), REGISTRY):
        assert (
            trust.verify(file, proof, audience="case-1", actor=ACTORS[2], event_id="ev-1", now=at)
            is None
        )


# ---- through the core: the guard of decide and open_case --------------------------------------


def opened(now: datetime = T0 + DAY) -> Decision:
    case = CaseInput(
        case_number="1",
        institution=ALMA,
        product="Alma",
        priority="normal",
        title="Loans report shows wrong totals",
        contact_email="ann@alma.example",
        opened_by=ACTORS[2],
    )
    return open_case(case, now)


def test_the_guard_changes_nothing_but_who_may_ask() -> None:
    """With senders, decide answers as without them, unless the proof is refused."""
    state = opened().state
    now = T0 + DAY + timedelta(minutes=1)
    for sender, actor, to in itertools.product(
        SENDERS, ACTORS, ["Tier 1 Analysis", "Closing", "Development"]
    ):
        event = TransitionRequest(
            to=to, actor=actor, event_id="ev-1", proof=token(sender, actor, issued=T0 + DAY)
        )
        refused = trust.verify_event(REGISTRY, event, "case-1", now)
        try:
            without = str(decide(state, event, now).state.status)
        except Rejection as rejection:
            without = rejection.reason
        try:
            with_ = str(decide(state, event, now, REGISTRY).state.status)
        except Rejection as rejection:
            with_ = rejection.reason
        assert with_ == (refused.reason if refused else without), (sender.name, actor, to)


def test_a_signed_event_names_its_event_id() -> None:
    state = opened().state
    now = T0 + DAY + timedelta(minutes=1)
    proof = token(DESK, ACTORS[2])
    with pytest.raises(Rejection, match="names its event_id") as caught:
        decide(
            state,
            TransitionRequest(to="Tier 1 Analysis", actor=ACTORS[2], proof=proof),
            now,
            REGISTRY,
        )
    assert caught.value.reason == "unauthenticated"
    moved = decide(
        state,
        TransitionRequest(to="Tier 1 Analysis", actor=ACTORS[2], event_id="ev-1", proof=proof),
        now,
        REGISTRY,
    )
    assert moved.state.status == "Tier 1 Analysis"


def test_opening_a_case_needs_a_proof_for_that_case() -> None:
    data = opened().state.case.model_dump()
    now = T0 + DAY + timedelta(minutes=1)
    with pytest.raises(Rejection) as caught:
        open_case(CaseInput.model_validate(data), now, senders=REGISTRY)
    assert caught.value.reason == "unauthenticated"
    other = token(DESK, ACTORS[2], case="2")
    with pytest.raises(Rejection, match="for case-2, not case-1"):
        open_case(CaseInput.model_validate(data | {"proof": other}), now, senders=REGISTRY)
    signed = CaseInput.model_validate(data | {"proof": token(DESK, ACTORS[2])})
    state = open_case(signed, now, senders=REGISTRY).state
    assert state.status == "New" and state.case.proof is None  # checked, not carried


def test_a_customer_reply_from_a_portal_for_another_institution_is_not_permitted() -> None:
    state = opened().state
    oz = ACTORS[1]
    reply = CustomerReply(text="hi", actor=oz, event_id="ev-1", proof=token(PORTAL, oz))
    with pytest.raises(Rejection) as caught:
        decide(state, reply, T0 + DAY + timedelta(minutes=1), REGISTRY)
    assert caught.value.reason == "not_permitted"


def test_release_shipped_needs_a_proof_too() -> None:
    state = opened().state.model_copy(update={"status": "Pending Release", "release_id": "2026.12"})
    now = T0 + DAY + timedelta(minutes=1)
    forged = ReleaseShipped(release_id="2026.12", shipped_at=T0)  # "a month ago": Closing at once
    with pytest.raises(Rejection) as caught:
        decide(state, forged, now, REGISTRY)
    assert caught.value.reason == "unauthenticated"
    assert "names no actor" in caught.value.message
    dev = Actor(role=Role.DEVELOPMENT, name="release")
    with pytest.raises(Rejection) as caught:  # the desk may not assert development
        decide(
            state,
            forged.model_copy(update={"actor": dev, "proof": token(DESK, dev)}),
            now,
            REGISTRY,
        )
    assert caught.value.reason == "not_permitted"
    tier2 = ACTORS[3]
    signed = forged.model_copy(update={"actor": tier2, "proof": token(DESK, tier2)})
    assert decide(state, signed, now, REGISTRY).state.release_shipped_at == T0


# ---- forged and truncated tokens: always a clean refusal ---------------------------------------

GOOD = token(DESK, ACTORS[2])
HEADER, CLAIMS, SIGNATURE = GOOD.split(".")


def forged_claims(claims: dict) -> str:
    return f"{HEADER}.{b64(json.dumps(claims).encode())}.{SIGNATURE}"


proofs = st.one_of(
    st.text(max_size=300),
    st.integers(0, len(GOOD) - 1).map(lambda n: GOOD[:n]),
    st.tuples(st.integers(0, len(GOOD) - 1), st.characters()).map(
        lambda p: GOOD[: p[0]] + p[1] + GOOD[p[0] + 1 :]
    ),
    st.lists(st.text(max_size=40), min_size=1, max_size=5).map(".".join),
    st.dictionaries(
        st.text(max_size=8),
        st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=3),
        max_size=6,
    ).map(lambda h: f"{b64(json.dumps(h).encode())}.{CLAIMS}.{SIGNATURE}"),
    st.fixed_dictionaries(
        {
            "alg": st.sampled_from(["none", "HS256", "EdDSA", "RS256"]),
            "kid": st.sampled_from(["desk-1", "nope", ""]),
        }
    ).map(lambda h: f"{b64(json.dumps(h).encode())}.{CLAIMS}.{SIGNATURE}"),
    st.fixed_dictionaries(
        {
            "iss": st.sampled_from(["desk", "portal", ""]),
            "aud": st.sampled_from(["case-1", "case-2"]),
            "jti": st.sampled_from(["ev-1", "x"]),
            "act": st.sampled_from([ACTORS[2].model_dump(mode="json"), {"role": "system"}, None]),
            "iat": st.integers(-(2**70), 2**70),
            "exp": st.integers(-(2**70), 2**70),
        }
    ).map(forged_claims),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proof=proofs)
def test_a_forged_or_truncated_proof_is_a_clean_refusal(proof: str) -> None:
    now = T0 + DAY + timedelta(minutes=1)
    refused = trust.verify(
        REGISTRY, proof, audience="case-1", actor=ACTORS[2], event_id="ev-1", now=now
    )
    if proof == GOOD:
        assert refused is None
        return
    assert refused is not None and refused.reason == "unauthenticated", refused
    state = opened().state
    event = TransitionRequest.model_construct(
        to=Status.TIER1_ANALYSIS, actor=ACTORS[2], event_id="ev-1", proof=proof
    )
    with pytest.raises(Rejection) as caught:
        decide(state, event, now, REGISTRY)
    assert caught.value.reason == "unauthenticated"


# ---- the files: the senders file and the key file ----------------------------------------------


def test_the_senders_file_in_toml_and_json(tmp_path: Path) -> None:
    key, public = new_key("portal", "portal-1")
    toml = tmp_path / "senders.toml"
    toml.write_text(
        f'required_from = "{T0.isoformat()}"\n\n[[senders]]\nname = "portal"\n'
        f'roles = ["customer"]\ninstitutions = ["{ALMA}"]\n\n[[senders.keys]]\n'
        f'kid = "portal-1"\npublic_key = "{public}"\nnot_before = "{T0.isoformat()}"\n'
    )
    senders = trust.load(toml)
    as_json = tmp_path / "senders.json"
    as_json.write_text(senders.model_dump_json())
    assert trust.load(as_json) == senders
    signed = Signer(key).sign("case-1", CustomerReply(text="hi", actor=ACTORS[0]))
    assert signed.event_id and signed.proof
    assert trust.verify_event(senders, signed, "case-1", datetime.now(UTC)) is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d.pop("required_from"), "required_from"),
        (lambda d: d["senders"][0].update(roles=["system"]), "system role"),
        (lambda d: d["senders"].append(dict(d["senders"][0])), "named twice"),
        (lambda d: d["senders"][0]["keys"][0].update(public_key="AAAA"), "key portal-1"),
    ],
)
def test_a_bad_senders_file_is_refused_with_the_reason(
    tmp_path: Path, change: object, error: str
) -> None:
    data = json.loads(registry(PORTAL).model_dump_json())
    change(data)  # type: ignore[operator]
    path = tmp_path / "senders.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=error):
        trust.load(path)
