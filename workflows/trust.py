"""Trusted senders: who may assert which actor, proven by a token the sender signed (Ed25519).

Pure: no Temporal, no wall clock. The registry (``TrustedSenders``) is passed in, and ``now`` is
the only clock, so a workflow asks at its own ``workflow.now()`` and replay gets the same answer.
That holds because the registry only grows: a key is never deleted and never backdated, a
revoked key gets an end (``not_after``) at or after the instant it is revoked, and a sender's
roles and institutions are only ever added to. Whatever was accepted at an instant stays accepted
at that instant.

A proof is a compact JWS (a JWT, ``alg: EdDSA``, ``kid`` in its header) with the claims
``iss`` (the sender), ``aud`` (the workflow id: ``case-<n>`` or ``release-<id>``), ``jti`` (the
event id), ``act`` (the actor: role, name, institution), ``iat`` and ``exp`` (seconds since the
epoch). Verifying it gives ``None`` or a ``Refusal``; nothing else escapes.
"""

from __future__ import annotations

import base64
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workflows.contract import Actor, Instant, Role

ALGORITHM = "EdDSA"
# A token issued a little ahead of the case's clock is accepted: senders' clocks drift.
CLOCK_SKEW = timedelta(minutes=5)
# Longer tokens are not even parsed (the wire field is bounded the same way).
MAX_PROOF_CHARS = 4_096
UNAUTHENTICATED = "unauthenticated"
NOT_PERMITTED = "not_permitted"
ANY_INSTITUTION = "*"


class Refusal(NamedTuple):
    reason: str  # ``unauthenticated`` or ``not_permitted``
    message: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SenderKey(_Strict):
    """One public key of a sender, valid from ``not_before`` until ``not_after`` (if any)."""

    kid: str = Field(min_length=1, max_length=128)
    public_key: str  # PEM (SubjectPublicKeyInfo) or the raw 32 bytes, base64url
    not_before: Instant
    not_after: Instant | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.not_before <= now and (self.not_after is None or now < self.not_after)

    def key(self) -> Ed25519PublicKey:
        return public_key(self.public_key)


class Sender(_Strict):
    """A system allowed to assert actors: the roles it may assert and, for customers, the
    institutions (``"*"``: any)."""

    name: str = Field(min_length=1, max_length=128)
    keys: list[SenderKey] = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)
    institutions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_system(self) -> Sender:
        if Role.SYSTEM in self.roles:
            raise ValueError(f"sender {self.name}: the system role is the workflow's own")
        return self

    def may_assert(self, actor: Actor) -> bool:
        if actor.role not in self.roles:
            return False
        if actor.role is Role.CUSTOMER:
            allowed = set(self.institutions)
            return ANY_INSTITUTION in allowed or actor.institution in allowed
        return True


class TrustedSenders(_Strict):
    """The file ``CASES_TRUSTED_SENDERS`` names. Proofs are required for events the workflow
    handles from ``required_from`` on (never earlier than the file is deployed, so events a case
    accepted before replay the same), until ``required_until`` if that is set (turning it off
    without breaking replay)."""

    required_from: Instant
    required_until: Instant | None = None
    senders: list[Sender] = Field(default_factory=list)
    _keys: dict[str, tuple[Sender, SenderKey, Ed25519PublicKey]]

    @model_validator(mode="after")
    def _index(self) -> TrustedSenders:
        index: dict[str, tuple[Sender, SenderKey, Ed25519PublicKey]] = {}
        names: set[str] = set()
        for sender in self.senders:
            if sender.name in names:
                raise ValueError(f"sender {sender.name} is named twice")
            names.add(sender.name)
            for key in sender.keys:
                if key.kid in index:
                    raise ValueError(f"key id {key.kid} is used twice")
                try:
                    index[key.kid] = (sender, key, key.key())
                except ValueError as err:
                    raise ValueError(f"key {key.kid} of sender {sender.name}: {err}") from None
        self._keys = index
        return self

    def required_at(self, now: datetime) -> bool:
        return self.required_from <= now and (
            self.required_until is None or now < self.required_until
        )

    def find(self, kid: str) -> tuple[Sender, SenderKey, Ed25519PublicKey] | None:
        return self._keys.get(kid)


class Claims(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    iss: str
    aud: str
    jti: str
    act: Actor
    iat: int
    exp: int


def public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or from its raw 32 bytes in base64url; ``ValueError``."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)


def raw_public_key(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def load(path: str | Path) -> TrustedSenders:
    """The senders file, TOML (``.toml``) or JSON; ``ValueError`` naming what is wrong."""
    path = Path(path)
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return TrustedSenders.model_validate(data)
    except (ValueError, ValidationError) as err:
        raise ValueError(f"trusted senders file {path}: {_explain(err)}") from None


def _explain(err: ValueError) -> str:
    """One line: ``field: problem; ...`` (as ``workflows.payloads.explain``, which imports
    Temporal; this module may not)."""
    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
            for e in err.errors(include_url=False)[:5]
        )
    return str(err)


# ---- signing (the senders' side) ---------------------------------------------------------------


def sign(
    private_key: Ed25519PrivateKey,
    *,
    sender: str,
    kid: str,
    audience: str,
    actor: Actor,
    event_id: str,
    issued_at: datetime,
    ttl: timedelta = timedelta(minutes=5),
) -> str:
    claims = {
        "iss": sender,
        "aud": audience,
        "jti": event_id,
        "act": actor.model_dump(mode="json"),
        "iat": int(issued_at.timestamp()),
        "exp": int((issued_at + ttl).timestamp()),
    }
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})


# ---- verifying (the case's side) ---------------------------------------------------------------


def verify(
    senders: TrustedSenders,
    proof: str | None,
    *,
    audience: str,
    actor: Actor,
    event_id: str | None,
    now: datetime,
) -> Refusal | None:
    """``None`` when ``proof`` shows a registered sender, with a key valid at ``now``, vouching
    for exactly this actor on this workflow (and event id) and allowed to; else why not."""
    if not senders.required_at(now):
        return None
    if not proof:
        return Refusal(UNAUTHENTICATED, "no proof: trusted senders are required on this case")
    found = _authenticate(senders, proof, now)
    if isinstance(found, Refusal):
        return found
    claims, sender = found
    if claims.aud != audience:
        return Refusal(UNAUTHENTICATED, f"the proof is for {claims.aud}, not {audience}")
    if event_id is not None and claims.jti != event_id:
        return Refusal(UNAUTHENTICATED, f"the proof is for event {claims.jti!r}, not {event_id!r}")
    if claims.act != actor:
        return Refusal(UNAUTHENTICATED, "the proof vouches for another actor than the event names")
    if not sender.may_assert(actor):
        what = (
            f"customers of {actor.institution or 'no institution'}"
            if actor.role is Role.CUSTOMER and actor.role in sender.roles
            else f"the role {actor.role}"
        )
        return Refusal(NOT_PERMITTED, f"sender {sender.name} may not assert {what}")
    return None


def verify_event(
    senders: TrustedSenders, event: object, audience: str, now: datetime
) -> Refusal | None:
    """``verify`` for any event model with a ``proof`` field, its ``actor`` (and maybe
    ``event_id``). An event without one (a deadline that fell due) is the workflow's own.

    A signed event names its event id, the one the proof is for, so the proof cannot be
    replayed for another event."""
    if "proof" not in getattr(type(event), "model_fields", {}):
        return None
    if not senders.required_at(now):
        return None
    actor = getattr(event, "actor", None)
    proof = getattr(event, "proof", None)
    if not isinstance(actor, Actor):
        return Refusal(UNAUTHENTICATED, "no proof: the event names no actor to vouch for")
    event_id = getattr(event, "event_id", None)
    if proof and not event_id and hasattr(event, "event_id"):
        return Refusal(UNAUTHENTICATED, "a signed event names its event_id (the proof's jti)")
    return verify(senders, proof, audience=audience, actor=actor, event_id=event_id, now=now)


def _kid(proof: str) -> str:
    kid = jwt.get_unverified_header(proof).get("kid")
    if not isinstance(kid, str):
        raise jwt.InvalidTokenError("no key id (kid) in the header")
    return kid


def _authenticate(
    senders: TrustedSenders, proof: str, now: datetime
) -> tuple[Claims, Sender] | Refusal:
    if len(proof) > MAX_PROOF_CHARS:
        return Refusal(UNAUTHENTICATED, f"the proof is longer than {MAX_PROOF_CHARS} chars")
    try:
        kid = _kid(proof)
        found = senders.find(kid)
        if found is None:
            return Refusal(UNAUTHENTICATED, f"no trusted sender has key {kid!r}")
        sender, key, public = found
        # The signature only: the times are checked against ``now``, never the wall clock.
        data: Any = jwt.decode(
            proof,
            public,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
        claims = Claims.model_validate(data)
    except Exception as err:  # any token that cannot be read and verified is no proof
        return Refusal(UNAUTHENTICATED, f"the proof is not a valid token: {_short(err)}")
    if claims.iss != sender.name:
        return Refusal(UNAUTHENTICATED, f"key {kid!r} is not a key of {claims.iss!r}")
    if not key.valid_at(now):
        return Refusal(
            UNAUTHENTICATED,
            f"key {kid!r} of sender {sender.name} is not valid at {now:%Y-%m-%d %H:%M:%S} UTC",
        )
    issued, expires = _instant(claims.iat), _instant(claims.exp)
    if issued is None or expires is None or issued > now + CLOCK_SKEW:
        return Refusal(UNAUTHENTICATED, "the proof is issued in the future")
    if expires <= now:
        return Refusal(UNAUTHENTICATED, f"the proof expired at {expires:%Y-%m-%d %H:%M:%S} UTC")
    return claims, sender


def _instant(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


# ---- which registry a worker's workflows use ----------------------------------------------------

# Filled by the worker before it polls (this module is passed through the sandbox, so workflow
# code sees the same dict); keyed by task queue, so workers of one process keep apart. The entry
# under ``None`` serves any other task queue: a ``Replayer`` runs histories on a queue of its own.
_INSTALLED: dict[str | None, TrustedSenders] = {}


def install(task_queue: str | None, senders: TrustedSenders | None) -> None:
    if senders is None:
        _INSTALLED.pop(task_queue, None)
    else:
        _INSTALLED[task_queue] = senders


def installed(task_queue: str) -> TrustedSenders | None:
    return _INSTALLED.get(task_queue) or _INSTALLED.get(None)
