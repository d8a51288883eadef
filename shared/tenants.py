"""The tenants file: which third-party providers exist and which tenants use them.

Loaded once at start. Anything wrong in it stops the process with one message
naming the file, the tenant (or provider) and the key, so an operator never
has to guess which of 200 tenants has the typo. Secrets are referenced, never
written in the file: ``{env: NAME}`` or ``{file: /run/secrets/...}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError, model_validator

# Raised here, defined apart so `conduit` can catch it without importing this module.
from shared.config_errors import ConfigError as ConfigError
from shared.schedules import ImportDefaults, TenantImports
from shared.yaml_file import YamlDocument, read_yaml

# Tenant and provider names end up in Redis keys, job ids, metric labels and
# headers, so they are kept to a conservative alphabet: no ':' or '/', which separate key and
# job id parts. Checked with fullmatch: re.match's '$' would let a trailing newline through.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

GrantType = Literal["client_credentials", "refresh_token"]
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret comes from: an environment variable or a file (a mounted Kubernetes Secret)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> SecretStr:
        """Read the secret now; the error names the variable or file, never a value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {_name_of(self.env)} is not set or empty")
            return SecretStr(value)
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {_path_of(self.file)}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"secret file {_path_of(self.file)} is empty")
        return SecretStr(value)


# A secret written where its variable's name or file's path belongs ({env: s3cr3t}) must not be repeated in
# the error: a name is shown only when it looks like one (upper case, as variables are by convention), a path
# when absolute (as mounted secrets are).
_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _name_of(variable: str) -> str:
    return variable if _VARIABLE_NAME.fullmatch(variable) else "(named at this key; not an upper-case name)"


def _path_of(path: Path) -> str:
    return str(path) if path.is_absolute() else "(relative path given at this key)"


class Provider(_Strict):
    """A third party: its OAuth2 token endpoint and the API base the proxy may talk to."""

    token_url: HttpUrl
    api_base_url: HttpUrl
    grant_type: GrantType = "client_credentials"
    scopes: list[str] = Field(default_factory=list)
    client_auth_method: ClientAuthMethod = "client_secret_basic"
    # Used when a token response has no expires_in (a warning is logged each time).
    default_expires_in: int = Field(default=3600, gt=0)


class TenantProvider(_Strict):
    """One tenant's credentials at one provider."""

    client_id: str = Field(min_length=1)
    client_secret: SecretRef | None = None
    # refresh_token grant only: the refresh token to start from when the store has none.
    refresh_token: SecretRef | None = None


class Tenant(_Strict):
    """A tenant and the providers it uses; ``default_provider`` serves requests that name none."""

    providers: dict[str, TenantProvider] = Field(min_length=1)
    default_provider: str | None = None
    imports: TenantImports = TenantImports()

    @property
    def default(self) -> str:
        return self.default_provider or next(iter(self.providers))


class TenantsFile(_Strict):
    providers: dict[str, Provider] = Field(min_length=1)
    tenants: dict[str, Tenant]
    imports: ImportDefaults = ImportDefaults()


_FIELDS = frozenset(
    name
    for model in (TenantsFile, Tenant, Provider, TenantProvider, SecretRef, TenantImports, ImportDefaults)
    for name in model.model_fields
)


class Credentials:
    """A tenant's resolved secrets at one provider; reprs never show them."""

    __slots__ = ("client_id", "client_secret", "refresh_token")

    def __init__(self, client_id: str, client_secret: SecretStr | None, refresh_token: SecretStr | None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret=***, refresh_token=***)"

    def secrets(self) -> list[str]:
        """Every secret value, so error text from third parties can be scrubbed of them."""
        return [s.get_secret_value() for s in (self.client_secret, self.refresh_token) if s is not None]


class TenantsConfig:
    """The validated tenants file with every secret resolved."""

    def __init__(self, path: Path, data: TenantsFile, credentials: dict[tuple[str, str], Credentials]) -> None:
        self.path = path
        self.providers = data.providers
        self.tenants = data.tenants
        self.imports = data.imports
        self._credentials = credentials

    def credentials(self, tenant: str, provider: str) -> Credentials:
        return self._credentials[(tenant, provider)]

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Every (tenant, provider) pair that has a token."""
        return iter(self._credentials)

    def has(self, tenant: str, provider: str) -> bool:
        return (tenant, provider) in self._credentials


def load_tenants(path: Path, resolve_secrets: bool = True) -> TenantsConfig:
    """Parse, validate and resolve the tenants file, or raise :class:`ConfigError` naming the place.

    The scheduler passes ``resolve_secrets=False``: it needs to know the pairs, never their secrets.
    """
    document = read_yaml(path, "the tenants file")
    try:
        data = TenantsFile.model_validate(document.data if document.data is not None else {})
    except ValidationError as exc:
        raise ConfigError(_describe(document, exc)) from None
    return TenantsConfig(path, data, _resolve(document, data, resolve_secrets))


def _describe(document: YamlDocument, exc: ValidationError) -> str:
    lines = [f"{document.path}: invalid tenants file"]
    for err in exc.errors(include_url=False):  # each input decides what is said; none is ever printed
        loc, msg = list(err["loc"]), err["msg"]
        shown = at = loc
        if _in_secret_ref([str(part) for part in loc]) and err["type"] == "extra_forbidden":
            # The unknown key may be the secret itself ({s3cr3t}): the key is named by its parent and line only.
            shown = at = loc[:5]
            msg = "unknown key (only 'env' or 'file')"
        elif err.get("input", ...) is None and loc and isinstance(loc[-1], str) and loc[-1] not in _FIELDS:
            # A key with no value, named as nothing we know: a value written where a key belongs ({acme, s3cr3t}).
            shown, msg = loc[:-1], "a key without a value (not repeated: it may be a value written where a key belongs)"
        lines.append(f"  {_where([str(part) for part in shown])}{_at(document, *at)}: {msg}")
    return "\n".join(lines)


def _in_secret_ref(loc: list[str]) -> bool:
    return (
        len(loc) > 5 and loc[0] == "tenants" and loc[2] == "providers" and loc[4] in ("client_secret", "refresh_token")
    )


def _where(loc: list[str]) -> str:
    if len(loc) >= 2 and loc[0] in ("tenants", "providers"):
        kind = "tenant" if loc[0] == "tenants" else "provider"
        key = ".".join(loc[2:]) or "(itself)"
        if loc[2:4] == ["imports", "modules"] and len(loc) > 4:
            return f"{kind} {loc[1]!r}, module {loc[4]!r}, key {key!r}"
        return f"{kind} {loc[1]!r}, key {key!r}"
    return f"key {'.'.join(loc) or '(top level)'!r}"


def _resolve(document: YamlDocument, data: TenantsFile, resolve_secrets: bool) -> dict[tuple[str, str], Credentials]:
    problems: list[str] = []
    resolved: dict[tuple[str, str], Credentials] = {}
    for name in data.providers:
        if not re.fullmatch(NAME_PATTERN, name):
            problems.append(f"provider {name!r}{_at(document, 'providers', name)}: name must match {NAME_PATTERN}")
    for tenant_name, tenant in data.tenants.items():
        where = f"tenant {tenant_name!r}"
        if not re.fullmatch(NAME_PATTERN, tenant_name):
            problems.append(f"{where}{_at(document, 'tenants', tenant_name)}: name must match {NAME_PATTERN}")
        if tenant.default_provider is not None and tenant.default_provider not in tenant.providers:
            at = _at(document, "tenants", tenant_name, "default_provider")
            problems.append(
                f"{where}, key 'default_provider'{at}: {tenant.default_provider!r} is not one of its providers"
            )
        for provider_name, creds in tenant.providers.items():
            pair = (tenant_name, provider_name)
            problems.extend(_check_pair(document, data, pair, creds, resolved, resolve_secrets))
    if problems:
        raise ConfigError("\n".join([f"{document.path}: invalid tenants file", *(f"  {p}" for p in problems)]))
    return resolved


def _at(document: YamlDocument, *loc: str | int) -> str:
    line = document.position(loc)
    return f" ({line})" if line else ""


def _check_pair(
    document: YamlDocument,
    data: TenantsFile,
    pair: tuple[str, str],
    creds: TenantProvider,
    resolved: dict[tuple[str, str], Credentials],
    resolve_secrets: bool,
) -> list[str]:
    tenant_name, provider_name = pair
    where, key = f"tenant {tenant_name!r}", f"providers.{provider_name}"
    provider = data.providers.get(provider_name)
    if provider is None:
        at = _at(document, "tenants", tenant_name, "providers", provider_name)
        return [f"{where}, key {key!r}{at}: unknown provider {provider_name!r} (known: {', '.join(data.providers)})"]
    problems: list[str] = []
    secrets: dict[str, SecretStr | None] = {}
    for field in ("client_secret", "refresh_token"):
        ref: SecretRef | None = getattr(creds, field)
        try:
            secrets[field] = ref.resolve() if ref is not None and resolve_secrets else None
        except ValueError as exc:
            at = _at(document, "tenants", tenant_name, "providers", provider_name, field)
            problems.append(f"{where}, key '{key}.{field}'{at}: {exc}")
    if provider.client_auth_method != "none" and creds.client_secret is None and resolve_secrets:
        method = provider.client_auth_method
        at = _at(document, "tenants", tenant_name, "providers", provider_name)
        problems.append(f"{where}, key '{key}.client_secret'{at}: required by client_auth_method {method}")
    if not problems:
        resolved[pair] = Credentials(creds.client_id, secrets["client_secret"], secrets["refresh_token"])
    return problems
