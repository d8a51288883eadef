"""docker-compose.yml, validated and resolved by the real compose binary (no engine needed for `config`).

Compose runs in a scrubbed environment so a variable exported in the shell cannot
hide one missing from .env.example.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
CONDUIT_SERVICES = ("migrate", "demo-api", "proxy", "scheduler", "importer", "console")
LONG_RUNNING = ("redis", "postgres", "demo-api", "proxy", "scheduler", "importer")

Run = Callable[..., subprocess.CompletedProcess[str]]
Tool = Callable[[str], str]


def env_file() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines())
    return {key: value for key, *rest in pairs for value in rest if not key.startswith("#")}


@pytest.fixture(scope="module")
def compose(tool: Tool, run: Run) -> Callable[..., subprocess.CompletedProcess[str]]:
    def config(*extra: str, **environ: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **environ}
        return run(tool("docker-compose"), *extra, "config", "--format", "json", env=env)

    return config


@pytest.fixture(scope="module")
def project(compose: Callable[..., subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    result = compose("--env-file", ".env.example")
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr and "not set" not in result.stderr, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


@pytest.fixture(scope="module")
def services(project: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = project["services"]
    return found


def test_compose_config_passes_with_the_example_env_file(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "postgres", *CONDUIT_SERVICES}


SECRETS = ("POSTGRES_PASSWORD", "CONDUIT_TOKEN_KEY", "CONDUIT_SECRET_ACME_DEMO", "CONDUIT_SECRET_GLOBEX_DEMO")


@pytest.fixture(scope="module")
def fresh_clone(compose: Callable[..., subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    """What `docker compose up` resolves on a fresh clone: no .env (/dev/null hides a developer's own)."""
    result = compose("--env-file", "/dev/null")
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr and "not set" not in result.stderr, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def test_compose_starts_on_a_fresh_clone_with_no_env_file(fresh_clone: dict[str, Any]) -> None:
    services = fresh_clone["services"]
    assert set(services) == {"redis", "postgres", *CONDUIT_SERVICES}
    proxy = services["proxy"]["environment"]
    Fernet(proxy["CONDUIT_TOKEN_KEY"].encode())  # raises when the default key is not a Fernet key
    # The URL the services use and the password PostgreSQL is initialised with are the same default.
    postgres = services["postgres"]["environment"]
    assert urlsplit(proxy["CONDUIT_DATABASE_URL"]).password == postgres["POSTGRES_PASSWORD"]
    assert services["migrate"]["environment"]["CONDUIT_DATABASE_URL"] == proxy["CONDUIT_DATABASE_URL"]


def test_every_default_secret_says_it_is_local_only(fresh_clone: dict[str, Any]) -> None:
    services = fresh_clone["services"]
    defaults = {
        "POSTGRES_PASSWORD": services["postgres"]["environment"]["POSTGRES_PASSWORD"],
        **{name: services["proxy"]["environment"][name] for name in SECRETS if name.startswith("CONDUIT_")},
    }
    assert set(defaults) == set(SECRETS)
    defaults["CONDUIT_CONSOLE_TOKEN"] = services["console"]["environment"]["CONDUIT_CONSOLE_TOKEN"]
    for name, value in defaults.items():
        assert "local-only" in value.lower(), f"{name}'s default {value!r} does not say it is local-only"
    # The demo third party knows the same defaults the tenants file sends.
    from demo.app import parse_clients

    clients = parse_clients(services["demo-api"]["environment"]["CONDUIT_DEMO_CLIENTS"])
    assert clients == {"acme": defaults["CONDUIT_SECRET_ACME_DEMO"], "globex": defaults["CONDUIT_SECRET_GLOBEX_DEMO"]}


def test_env_file_values_win_over_the_local_only_defaults(services: dict[str, Any]) -> None:
    example = env_file()
    for name in ("proxy", "scheduler", "importer"):
        environment = services[name]["environment"]
        for variable in SECRETS[1:]:
            assert environment[variable] == example[variable], (name, variable)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == example["POSTGRES_PASSWORD"]


def test_redis_persists_queued_jobs(services: dict[str, Any], project: dict[str, Any]) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert named_volume_at(redis, "/data") in project["volumes"]


def test_postgres_keeps_its_data_in_a_volume(services: dict[str, Any], project: dict[str, Any]) -> None:
    assert named_volume_at(services["postgres"], "/var/lib/postgresql/data") in project["volumes"]


def named_volume_at(service: dict[str, Any], target: str) -> str:
    (volume,) = [volume for volume in service["volumes"] if volume["target"] == target]
    assert volume["type"] == "volume"
    source: str = volume["source"]
    return source


def test_every_conduit_service_waits_for_the_migration(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("proxy", "scheduler", "importer"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["importer"]["depends_on"]["proxy"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["demo-api"]["condition"] == "service_healthy"


def test_every_dependency_waits_on_a_condition_the_dependency_can_meet(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], f"{dependency} has no health check"


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    # The one-shot migration's health is its exit status.
    assert services["migrate"]["healthcheck"]["disable"] is True


def test_health_checks_probe_the_ports_the_services_listen_on(services: dict[str, Any]) -> None:
    assert services["proxy"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/ready"
    assert services["scheduler"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8082/ready"
    assert services["importer"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8081/ready"
    assert services["demo-api"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8090/health_check"
    assert urlsplit(services["importer"]["environment"]["CONDUIT_PROXY_URL"]).port == 8080
    assert [port["target"] for port in services["proxy"]["ports"]] == [8080]
    assert all(port["host_ip"] == "127.0.0.1" for name in services for port in services[name].get("ports", []))


def test_conduit_services_share_one_hardened_image(services: dict[str, Any]) -> None:
    for name in CONDUIT_SERVICES:
        service = services[name]
        assert service["image"] == "conduit:local" and service["build"]["dockerfile"] == "Dockerfile", name
        assert service["command"] == [name], name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_importer_replicas_are_settable(compose: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    default = json.loads(compose("--env-file", ".env.example").stdout)
    assert default["services"]["importer"]["deploy"]["replicas"] == int(env_file()["CONDUIT_IMPORTER_REPLICAS"])
    scaled = json.loads(compose("--env-file", ".env.example", CONDUIT_IMPORTER_REPLICAS="5").stdout)
    assert scaled["services"]["importer"]["deploy"]["replicas"] == 5
    # The name before the importer was renamed, still read where the new one is not set.
    old = json.loads(compose(CONDUIT_WORKER_REPLICAS="4").stdout)
    assert old["services"]["importer"]["deploy"]["replicas"] == 4
    both = json.loads(compose(CONDUIT_WORKER_REPLICAS="4", CONDUIT_IMPORTER_REPLICAS="3").stdout)
    assert both["services"]["importer"]["deploy"]["replicas"] == 3


def test_secrets_come_from_the_env_file_only(services: dict[str, Any]) -> None:
    example = env_file()
    text = (REPO / "docker-compose.yml").read_text() + (REPO / "deploy" / "tenants.demo.yaml").read_text()
    for variable in (
        "POSTGRES_PASSWORD",
        "CONDUIT_TOKEN_KEY",
        "CONDUIT_SECRET_ACME_DEMO",
        "CONDUIT_SECRET_GLOBEX_DEMO",
    ):
        assert example[variable] not in text, f"{variable}'s value is written into a committed file"
    Fernet(example["CONDUIT_TOKEN_KEY"].encode())  # raises when the example key is not a Fernet key
    assert example["CONDUIT_LOG_LEVEL"] in ("DEBUG", "INFO", "WARNING", "ERROR")
    proxy = services["proxy"]["environment"]
    assert proxy["CONDUIT_TOKEN_KEY"] == example["CONDUIT_TOKEN_KEY"]
    password = urlsplit(proxy["CONDUIT_DATABASE_URL"]).password
    assert password == example["POSTGRES_PASSWORD"]


def test_the_old_token_key_is_absent_unless_set(compose: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    unset = json.loads(compose("--env-file", ".env.example").stdout)
    # null: compose passes nothing, so the app sees no key rather than an empty, invalid one.
    assert unset["services"]["proxy"]["environment"]["CONDUIT_TOKEN_KEY_OLD"] is None
    old = Fernet.generate_key().decode()
    rotating = json.loads(compose("--env-file", ".env.example", CONDUIT_TOKEN_KEY_OLD=old).stdout)
    for name in ("proxy", "scheduler", "importer"):
        assert rotating["services"][name]["environment"]["CONDUIT_TOKEN_KEY_OLD"] == old


def test_the_real_env_file_is_ignored_by_git(run: Run) -> None:
    assert run("git", "check-ignore", "--quiet", ".env").returncode == 0
    assert run("git", "check-ignore", "--quiet", ".env.example").returncode == 1


def test_demo_tenants_resolve_inside_compose_and_match_the_demo_clients(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Conduit's own loader and the demo's own parser: what the services send is what the demo accepts.
    from demo.app import parse_clients
    from shared.tenants import load_tenants

    demo_clients = parse_clients(services["demo-api"]["environment"]["CONDUIT_DEMO_CLIENTS"])
    for name in ("proxy", "scheduler", "importer"):
        environment = services[name]["environment"]
        (mount,) = [volume for volume in services[name]["volumes"] if volume["type"] == "bind"]
        assert mount["target"] == environment["CONDUIT_TENANTS_FILE"] and mount["read_only"] is True
        for variable, value in environment.items():
            if value is not None:
                monkeypatch.setenv(variable, value)
        tenants = load_tenants(Path(mount["source"]))
        assert len(list(tenants.pairs())) == 2
        sent = {}
        for tenant, provider in tenants.pairs():
            credentials = tenants.credentials(tenant, provider)
            assert credentials.client_secret is not None
            sent[credentials.client_id] = credentials.client_secret.get_secret_value()
        assert sent == demo_clients, name
    tenants = yaml.safe_load((REPO / "deploy" / "tenants.demo.yaml").read_text())
    for provider in tenants["providers"].values():
        for url in (provider["token_url"], provider["api_base_url"]):
            parts = urlsplit(url)
            assert parts.hostname == "demo-api" and parts.port == 8090, url
    assert urlsplit(tenants["providers"]["demo"]["token_url"]).path == "/oauth/token"
