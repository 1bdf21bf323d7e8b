"""Project settings: the spec's ``CASES_*`` environment variables.

Temporal's own connection settings (``TEMPORAL_ADDRESS``, profiles, TLS, API key) are read by
Temporal's envconfig, not here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows.calendar import SHORTEST_SPAN
from workflows.contract import TASK_QUEUE, DeadlinePolicy, PolicyOverrides, PolicySettings

DATA_DIR = Path(__file__).resolve().parent / ".data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASES_", extra="ignore")

    task_queue: str = TASK_QUEUE
    database_url: str = f"sqlite+aiosqlite:///{DATA_DIR / 'cases.db'}"
    smtp_url: str | None = None
    mail_from: str = "Support <support-cases@localhost>"
    support_email: str = "support-team@localhost"
    development_email: str = "development-team@localhost"
    # The organisation's deadline policy for new cases, e.g. "pcr_reminder=10d,pcr_closing=20d"
    # (unset fields keep the guide's); a case keeps the policy it opened with.
    default_policy: str = ""
    # The shortest deadline a policy may have: 1 minute in production; tests and demos on a
    # stopwatch may lower it (never below one second).
    policy_shortest: str = "1min"
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"
    metrics_port: int | None = None
    # Off runs the workflows without the SDK's sandbox (faster, less memory per cached case);
    # their determinism then rests on the code alone, which the replay tests check sandboxed.
    workflow_sandbox: bool = True
    # Cases kept in the worker's memory between their events (the SDK's max_cached_workflows):
    # fewer bound the memory (170-310 KiB each) at the price of a replay when an evicted case
    # wakes.
    workflow_cache: int = 1000
    # The embedded Temporal dev server (``python worker.py`` with no Temporal address configured).
    dev_server_port: int = 7233  # gRPC front end: the address clients connect to
    ui_port: int = 8233  # the Web UI
    http_port: int = 7243  # the HTTP API (plain JSON), for systems without a Temporal SDK
    data_dir: Path = DATA_DIR  # the dev server's SQLite file and log live here
    # The embedded dev server's Web UI decodes payloads through this codec server (if set).
    ui_codec_endpoint: str | None = None
    # Payload encryption (runtime.encryption): one base64 AES-256 key, or a TOML file of key
    # ids and keys naming the current one (rotation); at most one of the two.
    encryption_key: SecretStr | None = None
    encryption_keys_file: Path | None = None
    # ``python -m starter codec-server``: the browser origins allowed to call it (the Web UI's,
    # comma-separated) and the bearer token callers must send (unset: none needed).
    codec_cors_origins: str = "http://localhost:8233"
    codec_token: SecretStr | None = None

    # Trusted senders (README "Trust model"): the file of senders, their public keys and what
    # they may assert; unset, actors are self-asserted. The key (``python -m starter keys new``)
    # the project's client and CLI sign events with.
    trusted_senders: Path | None = None
    signing_key: Path | None = None


def policy_settings(settings: Settings) -> PolicySettings:
    """CASES_DEFAULT_POLICY and CASES_POLICY_SHORTEST as the cases read them; a bad value is a
    ``ValueError`` naming the setting, raised when the worker starts."""
    fields: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in settings.default_policy.split(","))):
        name, sep, span = item.partition("=")
        if not sep:
            raise ValueError(f"CASES_DEFAULT_POLICY takes FIELD=SPAN items, not {item!r}")
        fields[name.strip()] = span.strip()
    try:
        default = PolicyOverrides.model_validate(fields)
        DeadlinePolicy().with_fields(default)
    except ValidationError as err:
        raise ValueError(f"CASES_DEFAULT_POLICY: {_errors(err)}") from None
    try:
        result = PolicySettings(default=default, shortest=settings.policy_shortest)
    except ValidationError as err:
        raise ValueError(f"CASES_POLICY_SHORTEST: {_errors(err)}") from None
    if result.shortest.unit == "mo" or not result.shortest.at_most(SHORTEST_SPAN):
        raise ValueError("CASES_POLICY_SHORTEST: at most 1min (lower it for tests and demos)")
    return result


def _errors(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'policy'}: "
        f"{str(e['msg']).removeprefix('Value error, ')}"
        for e in err.errors()
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
