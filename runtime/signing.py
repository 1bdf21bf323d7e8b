"""Signing events for trusted senders: a sender's private key file and the tokens it makes.

The key file (``python -m starter keys new``) is JSON: the sender's name, the key id and the
Ed25519 private key (PEM, PKCS#8). Keep it as secret as the sender's other credentials; the
senders file (``CASES_TRUSTED_SENDERS``) holds only the public half.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from settings import Settings
from workflows import trust
from workflows.contract import Actor, CaseInput

E = TypeVar("E", bound=BaseModel)

DEFAULT_TTL = timedelta(minutes=5)


class KeyFile(BaseModel):
    sender: str
    kid: str
    private_key: str  # PEM, PKCS#8


class Signer:
    """Signs events as one sender: each proof names the workflow, actor and event id."""

    def __init__(self, key: KeyFile, ttl: timedelta = DEFAULT_TTL) -> None:
        private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"key {key.kid} is not an Ed25519 private key")
        self.key, self.private, self.ttl = key, private, ttl

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        try:
            return cls(KeyFile.model_validate_json(Path(path).read_text()))
        except (OSError, ValidationError, ValueError) as err:
            raise ValueError(f"signing key {path}: {err}") from None

    def token(
        self,
        audience: str,
        actor: Actor,
        event_id: str,
        now: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> str:
        return trust.sign(
            self.private,
            sender=self.key.sender,
            kid=self.key.kid,
            audience=audience,
            actor=actor,
            event_id=event_id,
            issued_at=now or datetime.now(UTC),
            ttl=ttl or self.ttl,
        )

    def sign(self, audience: str, event: E) -> E:
        """The event with its proof (and an event id, if it had none); a signed one as it is."""
        if getattr(event, "proof", None):
            return event
        actor = event.opened_by if isinstance(event, CaseInput) else getattr(event, "actor", None)
        if not isinstance(actor, Actor):
            return event
        update: dict[str, object] = {}
        event_id = getattr(event, "event_id", None)
        if "event_id" in type(event).model_fields and not event_id:
            event_id = update["event_id"] = uuid.uuid4().hex
        update["proof"] = self.token(audience, actor, event_id or uuid.uuid4().hex)
        return event.model_copy(update=update)


def new_key(sender: str, kid: str) -> tuple[KeyFile, str]:
    """A new key pair: the private key file's content and the public key (base64url)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return KeyFile(sender=sender, kid=kid, private_key=pem), trust.raw_public_key(
        private.public_key()
    )


def write_key(path: Path, key: KeyFile) -> None:
    """Written readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.model_dump_json(indent=2) + "\n")


# The CLI's ``--key`` (it wins over CASES_SIGNING_KEY for this process).
_override: Path | None = None


def use(path: Path | None) -> None:
    global _override
    _override = path


def signer(settings: Settings) -> Signer | None:
    path = _override or settings.signing_key
    return Signer.from_file(path) if path else None
