"""Secure connections through Temporal's environment configuration: a TOML profile with TLS
files and an API key yields the connect arguments; a bad path is one clear line; secrets never
reach the logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from pathlib import Path

import pytest
import structlog
from temporalio.service import TLSConfig

import logs
from runtime.connection import TemporalUnavailable, connect_config, redacted
from tests import readme

API_KEY = "tmprl-secret-api-key-0123456789"


def make_pki(where: Path) -> dict[str, Path]:
    """A throwaway CA and a client certificate signed by it (the openssl CLI)."""
    files = {name: where / f"{name}.pem" for name in ("ca", "ca-key", "client", "client-key")}

    def run(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", files["ca-key"], "-out", files["ca"])  # fmt: skip
    csr = where / "client.csr"
    run("req", *ec, "-subj", "/CN=worker",
        "-keyout", files["client-key"], "-out", csr)  # fmt: skip
    run("x509", "-req", "-in", csr, "-CA", files["ca"], "-CAkey", files["ca-key"],
        "-CAcreateserial", "-days", "1", "-out", files["client"])  # fmt: skip
    return files


@pytest.fixture
def temporal_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TEMPORAL_* from the machine; the TOML file of this test."""
    import os

    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    config = tmp_path / "temporal.toml"
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    return config


def write_profile(config: Path, pki: dict[str, Path], **paths: Path) -> None:
    tls = {
        "server_ca_cert_path": pki["ca"],
        "client_cert_path": pki["client"],
        "client_key_path": pki["client-key"],
        **paths,
    }
    lines = "\n".join(f'{key} = "{value}"' for key, value in tls.items())
    config.write_text(
        "[profile.prod]\n"
        'address = "support.a1b2c.tmprl.cloud:7233"\n'
        'namespace = "support.a1b2c"\n'
        f'api_key = "{API_KEY}"\n'
        "\n[profile.prod.tls]\n"
        'server_name = "support.a1b2c.tmprl.cloud"\n'
        f"{lines}\n"
    )


def test_a_toml_profile_yields_address_namespace_api_key_and_tls(
    temporal_env: Path, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    write_profile(temporal_env, pki)

    config = connect_config()

    assert config["target_host"] == "support.a1b2c.tmprl.cloud:7233"
    assert config["namespace"] == "support.a1b2c"
    assert config["api_key"] == API_KEY
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.domain == "support.a1b2c.tmprl.cloud"
    assert tls.server_root_ca_cert == pki["ca"].read_bytes()
    assert tls.client_cert == pki["client"].read_bytes()
    assert tls.client_private_key == pki["client-key"].read_bytes()


def test_environment_variables_override_the_profile(
    temporal_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profile(temporal_env, make_pki(tmp_path))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "support")

    config = connect_config()

    assert (config["target_host"], config["namespace"]) == ("temporal.internal:7233", "support")
    assert config["api_key"] == API_KEY


def test_an_api_key_alone_turns_tls_on(monkeypatch: pytest.MonkeyPatch, temporal_env: Path) -> None:
    monkeypatch.delenv("TEMPORAL_PROFILE")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "eu-west-1.aws.api.temporal.io:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "support.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)

    config = connect_config()

    assert config["api_key"] == API_KEY
    assert config["tls"] is True


def test_a_missing_client_key_is_one_clear_line(temporal_env: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "client.key"
    write_profile(temporal_env, make_pki(tmp_path), client_key_path=missing)

    with pytest.raises(TemporalUnavailable) as raised:
        connect_config()

    message = str(raised.value)
    assert "\n" not in message
    assert message == f"bad TLS files: not found: client key {missing}"


def test_an_unknown_profile_is_one_clear_line(
    temporal_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_profile(temporal_env, make_pki(tmp_path))
    monkeypatch.setenv("TEMPORAL_PROFILE", "absent")

    with pytest.raises(TemporalUnavailable) as raised:
        connect_config()

    assert str(raised.value) == (
        "cannot read the Temporal configuration: Profile 'absent' not found"
    )


def test_secrets_never_reach_the_logs(
    temporal_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path)
    write_profile(temporal_env, pki)
    monkeypatch.setenv("CASES_DATABASE_URL", "postgresql://cases:db-password-42@db/cases")
    stream = io.StringIO()
    logs.configure("json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        config = connect_config()
        log = structlog.get_logger("worker")
        # The worker's own line, and careless ones: every secret-looking field is masked.
        log.info("connecting to temporal", **redacted(config))
        log.info("careless", api_key=API_KEY, database_url="postgresql://cases:db-password-42@db/c")
        logging.getLogger("sqlalchemy").info("engine %s", "postgresql://cases:db-password-42@db")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()

    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    connecting = next(line for line in lines if line["event"] == "connecting to temporal")
    assert connecting["target_host"] == "support.a1b2c.tmprl.cloud:7233"
    assert connecting["namespace"] == "support.a1b2c"
    assert connecting["api_key"] == "***"
    assert connecting["tls"] == {
        "server_name": "support.a1b2c.tmprl.cloud",
        "server_ca_cert": True,
        "client_cert": True,
        "client_key": True,
    }
    assert API_KEY not in output
    assert "db-password-42" not in output
    key_body = pki["client-key"].read_text().splitlines()[1]
    assert key_body not in output
    assert "PRIVATE KEY" not in output
    assert "postgresql://cases:***@db" in output


def test_the_readme_profile_is_what_the_sdk_reads(temporal_env: Path, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    profile = readme.example("temporal-profile")
    profile = profile.replace("/etc/support-cases/client.pem", str(pki["client"]))
    profile = profile.replace("/etc/support-cases/client.key", str(pki["client-key"]))
    temporal_env.write_text(profile)

    config = connect_config()

    assert config["target_host"] == "support.a1b2c.tmprl.cloud:7233"
    assert config["namespace"] == "support.a1b2c"
    assert isinstance(config["tls"], TLSConfig)
    assert config["tls"].client_cert == pki["client"].read_bytes()
