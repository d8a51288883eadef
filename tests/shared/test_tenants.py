from pathlib import Path

import pytest

from shared.schedules import ImportDefaults, ScheduleSpec
from shared.tenants import ConfigError, load_tenants

GOOD = """
providers:
  demo:
    token_url: https://idp.example.com/oauth/token
    api_base_url: https://api.example.com/v1/
    grant_type: client_credentials
    scopes: [read]
tenants:
  acme:
    providers:
      demo:
        client_id: acme
        client_secret: {env: ACME_SECRET}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


def test_loads_and_resolves_secret_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SECRET", "hunter2")
    config = load_tenants(write(tmp_path, GOOD))
    creds = config.credentials("acme", "demo")
    assert creds.client_secret is not None and creds.client_secret.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(creds)
    assert config.tenants["acme"].default == "demo"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("from-file\n")
    config = load_tenants(write(tmp_path, GOOD.replace("{env: ACME_SECRET}", f"{{file: {secret}}}")))
    creds = config.credentials("acme", "demo")
    assert creds.client_secret is not None and creds.client_secret.get_secret_value() == "from-file"


def test_missing_env_secret_names_file_tenant_key_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_SECRET", raising=False)
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as err:
        load_tenants(path)
    message = str(err.value)
    assert str(path) in message
    assert "tenant 'acme'" in message
    assert "providers.demo.client_secret" in message
    assert "ACME_SECRET" in message


def test_unknown_provider_and_bad_grant_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SECRET", "x")
    text = GOOD.replace("grant_type: client_credentials", "grant_type: password")
    with pytest.raises(ConfigError) as err:
        load_tenants(write(tmp_path, text))
    assert "provider 'demo', key 'grant_type'" in str(err.value)
    text = GOOD.replace("      demo:\n        client_id", "      other:\n        client_id")
    with pytest.raises(ConfigError) as err:
        load_tenants(write(tmp_path, text))
    assert "tenant 'acme', key 'providers.other'" in str(err.value)
    assert "unknown provider 'other'" in str(err.value)


def test_typo_in_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SECRET", "x")
    with pytest.raises(ConfigError) as err:
        load_tenants(write(tmp_path, GOOD.replace("client_id: acme", "client_id: acme\n        clientsecret: 1")))
    assert "tenant 'acme', key 'providers.demo.clientsecret'" in str(err.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_tenants(write(tmp_path, "providers: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read the tenants file"):
        load_tenants(tmp_path / "absent.yaml")


def test_secret_ref_needs_exactly_one_source(tmp_path: Path) -> None:
    text = GOOD.replace("{env: ACME_SECRET}", "{env: A, file: /x}")
    with pytest.raises(ConfigError, match="exactly one of 'env' or 'file'"):
        load_tenants(write(tmp_path, text))


def test_tenant_name_alphabet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SECRET", "x")
    with pytest.raises(ConfigError, match="tenant 'ac/me'"):
        load_tenants(write(tmp_path, GOOD.replace("  acme:", "  ac/me:")))


def test_default_schedule_is_valid() -> None:
    # The default is built without validation (so croniter stays out of the proxy); check it here.
    default = ImportDefaults().schedule
    assert ScheduleSpec.model_validate(default.model_dump()) == default
    assert default.cron and default.timezone
