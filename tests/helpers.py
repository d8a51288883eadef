"""Small builders the tests share: a tenants file pointing at a fake third party."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.tenants import TenantsConfig, load_tenants
from tests.third_party import ThirdParty


def tenants_file(
    tmp_path: Path,
    party: ThirdParty,
    tenants: list[str],
    *,
    grant_type: str = "client_credentials",
    extra_providers: dict[str, ThirdParty] | None = None,
    client_auth_method: str = "client_secret_basic",
) -> Path:
    """Write a tenants file whose secrets live in files under tmp_path, and register the clients."""
    providers: dict[str, Any] = {"demo": _provider(party, grant_type, client_auth_method)}
    for name, other in (extra_providers or {}).items():
        providers[name] = _provider(other, grant_type, client_auth_method)
    data: dict[str, Any] = {"providers": providers, "tenants": {}}
    for tenant in tenants:
        entry: dict[str, Any] = {}
        for name, target in [("demo", party), *(extra_providers or {}).items()]:
            client_id = f"{tenant}-{name}"
            secret = f"secret-{client_id}-s3cr3t"
            target.clients[client_id] = secret
            secret_file = tmp_path / f"{client_id}.secret"
            secret_file.write_text(secret)
            creds: dict[str, Any] = {"client_id": client_id, "client_secret": {"file": str(secret_file)}}
            if grant_type == "refresh_token":
                rt_file = tmp_path / f"{client_id}.refresh"
                rt_file.write_text(target.seed_refresh_token(client_id))
                creds["refresh_token"] = {"file": str(rt_file)}
            entry[name] = creds
        data["tenants"][tenant] = {"providers": entry}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _provider(party: ThirdParty, grant_type: str, client_auth_method: str) -> dict[str, Any]:
    return {
        "token_url": party.token_url,
        "api_base_url": party.api_url,
        "grant_type": grant_type,
        "client_auth_method": client_auth_method,
        "scopes": ["read"],
        "default_expires_in": 120,
    }


def load(tmp_path: Path, party: ThirdParty, tenants: list[str], **kwargs: Any) -> TenantsConfig:
    return load_tenants(tenants_file(tmp_path, party, tenants, **kwargs))
