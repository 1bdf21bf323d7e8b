"""Payload encryption: an AES-GCM payload codec on the data converter of the worker and the client.

With ``CASES_ENCRYPTION_KEY`` (one base64 AES-256 key) or ``CASES_ENCRYPTION_KEYS_FILE`` (a TOML
file of key ids and keys, naming the current one) set, every payload the worker and the project's
client write (workflow and activity inputs and results, signals, updates, queries, memo, summary
and details, failure messages and details) is encrypted with the current key before it reaches
Temporal, and names its key id in its metadata. Decoding picks the key by that id, so a worker
that holds old keys beside the current one reads every case; a payload that arrives unencrypted
(plain JSON from other systems, the HTTP API, the ``temporal`` CLI) passes through as it is.
Search attributes are not payloads a codec sees: they are never encrypted (``workflows.search``
keeps personal data out of them).

A keys file::

    current = "2026-11"

    [keys]
    2026-06 = "base64 of 32 random bytes"
    2026-11 = "base64 of 32 random bytes"

A single ``CASES_ENCRYPTION_KEY`` has the id ``fingerprint(key)``; a key in a file is found by
its fingerprint as well as its name, so moving from the single key to a file keeps old cases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"  # the metadata field naming the key that encrypted the payload
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # AES-GCM's standard nonce, random per payload
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class EncryptionConfigError(ValueError):
    """The encryption settings cannot be used; the message is one line and says why."""


class DecryptionError(ValueError):
    """An encrypted payload cannot be decrypted with the keys at hand."""


def fingerprint(key: bytes) -> str:
    """A key's id when it has no name: derived from the key, reveals nothing usable about it."""
    return "sha256-" + hashlib.sha256(key).hexdigest()[:16]


def new_key() -> str:
    """A fresh random AES-256 key, base64 as the settings take it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionConfigError(f"{what} is not base64") from None
    if len(key) != KEY_BYTES:
        raise EncryptionConfigError(
            f"{what} is {len(key)} bytes; an AES-256 key is {KEY_BYTES} "
            f"(make one with: openssl rand -base64 32)"
        )
    return key


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current: str
    keys: dict[str, str]


@dataclass(frozen=True)
class Keyring:
    """The keys a process may decrypt with, and the one it encrypts with."""

    current: str
    keys: Mapping[str, bytes]
    _by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise EncryptionConfigError(f"the current key {self.current!r} is not among the keys")
        by_id = {fingerprint(key): key for key in self.keys.values()}
        by_id.update(self.keys)
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def single(cls, key: str | bytes) -> Keyring:
        raw = key if isinstance(key, bytes) else parse_key(key, "CASES_ENCRYPTION_KEY")
        return cls(current=fingerprint(raw), keys={fingerprint(raw): raw})

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        where = f"CASES_ENCRYPTION_KEYS_FILE {path}"
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
            parsed = _KeysFile.model_validate(data)
        except OSError as err:
            raise EncryptionConfigError(f"cannot read {where}: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise EncryptionConfigError(f"{where} is not TOML: {err}") from None
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in err.errors()
            )
            raise EncryptionConfigError(
                f'{where} needs current = "<id>" and a [keys] table of id = "<base64>" ({problems})'
            ) from None
        bad = [k for k in parsed.keys if not KEY_ID_PATTERN.fullmatch(k)]
        if bad:
            raise EncryptionConfigError(
                f"{where}: key ids are letters, digits, '.', '_' and '-' (at most 64): {bad}"
            )
        keys = {k: parse_key(v, f"key {k!r} of {where}") for k, v in parsed.keys.items()}
        if parsed.current not in keys:
            raise EncryptionConfigError(
                f"{where}: current = {parsed.current!r} names no key of [keys]"
            )
        return cls(current=parsed.current, keys=keys)

    def key(self, key_id: str) -> bytes | None:
        return self._by_id.get(key_id)


def keyring(settings: Any) -> Keyring | None:
    """The settings' keys; ``None`` when encryption is off (neither setting given)."""
    try:
        return _keyring(settings)
    except EncryptionConfigError as err:
        raise EncryptionConfigError(f"bad encryption settings: {err}") from None


def _keyring(settings: Any) -> Keyring | None:
    key = settings.encryption_key
    if key is not None and not key.get_secret_value().strip():
        key = None  # an empty variable (``CASES_ENCRYPTION_KEY=``) is an unset one
    path = settings.encryption_keys_file
    if key is not None and path is not None:
        raise EncryptionConfigError(
            "set CASES_ENCRYPTION_KEY or CASES_ENCRYPTION_KEYS_FILE, not both"
        )
    if path is not None:
        return Keyring.from_file(Path(path))
    if key is not None:
        return Keyring.single(key.get_secret_value())
    return None


class EncryptionCodec(PayloadCodec):
    """AES-GCM per payload: the whole payload (metadata and data) sealed under a fresh nonce."""

    def __init__(self, keys: Keyring) -> None:
        self.keys = keys
        self._current = AESGCM(keys.keys[keys.current])
        self._current_id = keys.current.encode()

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self._current_id}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        # Not ours to decrypt (plain JSON from another system, or a payload that predates the
        # key): it is read as it is.
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        key = self.keys.key(key_id)
        if key is None:
            raise DecryptionError(
                f"a payload is encrypted with key {key_id!r}, which this process does not have: "
                "keep every key that cases still use in CASES_ENCRYPTION_KEYS_FILE"
            )
        data = payload.data
        try:
            plain = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"a payload encrypted with key {key_id!r} does not decrypt (altered, or another "
                "key under that id)"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def data_converter(settings: Any = None) -> DataConverter:
    """The data converter of every client and worker of the project: plain JSON through
    pydantic, and with a key set, every payload and failure message encrypted."""
    if settings is None:
        from settings import get_settings

        settings = get_settings()
    keys = keyring(settings)
    if keys is None:
        return pydantic_data_converter
    return DataConverter(
        payload_converter_class=PydanticPayloadConverter,
        payload_codec=EncryptionCodec(keys),
        # A failure's message and stack trace go into its encoded (so encrypted) attributes.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
