"""Project settings: the spec's ``CASES_*`` environment variables.

Temporal's own connection settings (``TEMPORAL_ADDRESS``, profiles, TLS, API key) are read by
Temporal's envconfig, not here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path(__file__).resolve().parent / ".data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASES_", extra="ignore")

    task_queue: str = "support-cases"
    database_url: str = f"sqlite+aiosqlite:///{DATA_DIR / 'cases.db'}"
    smtp_url: str | None = None
    mail_from: str = "Support <support-cases@localhost>"
    support_email: str = "support-team@localhost"
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"
    metrics_port: int | None = None
    # Off runs the workflows without the SDK's sandbox (faster, less memory per cached case);
    # their determinism then rests on the code alone, which the replay tests check sandboxed.
    workflow_sandbox: bool = True
    # Cases kept in the worker's memory between their events (the SDK's max_cached_workflows):
    # fewer bound the memory (about 150 KiB each) at the price of a replay when an evicted case
    # wakes.
    workflow_cache: int = 1000
    # The embedded Temporal dev server (``python worker.py`` with no Temporal address configured).
    dev_server_port: int = 7233  # gRPC front end: the address clients connect to
    ui_port: int = 8233  # the Web UI
    http_port: int = 7243  # the HTTP API (plain JSON), for systems without a Temporal SDK
    data_dir: Path = DATA_DIR  # the dev server's SQLite file and log live here
    # Trusted senders (README "Trust model"): the file of senders, their public keys and what
    # they may assert; unset, actors are self-asserted. The key (``python -m starter keys new``)
    # the project's client and CLI sign events with.
    trusted_senders: Path | None = None
    signing_key: Path | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
