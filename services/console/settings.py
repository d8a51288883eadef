"""Settings of the operations console (``CONDUIT_CONSOLE_*`` and the common ``CONDUIT_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from shared.db import DatabaseSettings
from shared.settings import CommonSettings

# Static sign-in tokens shorter than this are refused (guessable).
MIN_TOKEN_CHARS = 16


class ConsoleSettings(CommonSettings, DatabaseSettings):
    """Where the console listens and who may sign in.

    It must never be open: at least one way in (the static admin token or OIDC
    with an allow list) is required, or the settings do not validate.
    """

    console_host: str = "0.0.0.0"
    console_port: int = Field(default=8083, ge=0, le=65535)
    # The URL people reach the console at; OIDC's redirect URI is built from it.
    console_public_url: str = "http://127.0.0.1:8083"
    # Static sign-in for local use and tests: whoever types it is an admin.
    console_token: SecretStr | None = None
    # Optional second static token that signs in read-only (sees everything, can do nothing).
    console_readonly_token: SecretStr | None = None
    # OIDC (authorization code with PKCE). The issuer's discovery document names every endpoint.
    console_oidc_issuer: str | None = None
    console_oidc_client_id: str | None = None
    console_oidc_client_secret: SecretStr | None = None
    console_oidc_scopes: str = "openid email profile groups"
    console_oidc_groups_claim: str = "groups"
    # Who may sign in (read-only) and who may act (admin); comma-separated. Empty lists let nobody in.
    console_allowed_groups: str = ""
    console_allowed_emails: str = ""
    console_admin_groups: str = ""
    console_admin_emails: str = ""
    # Session cookie: lifetime, and Secure: "auto" sets it when the request came over TLS
    # (directly or per X-Forwarded-Proto from the ingress).
    console_session_ttl: float = Field(default=8 * 3600.0, gt=0)
    console_cookie_secure: Literal["auto", "always", "never"] = "auto"
    # Rows per page of the imports table.
    console_page_size: int = Field(default=50, gt=0, le=500)
    # Filters longer than this are refused (400) before they reach the database.
    console_filter_max_chars: int = Field(default=200, gt=0)
    # The live board's pushes are coalesced to at most one per this many seconds.
    console_push_interval: float = Field(default=0.2, gt=0)

    @field_validator("console_token", "console_readonly_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # The sign-in form is the console's only guard against guessing: a short token is refused at start.
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"CONDUIT_{str(info.field_name).upper()} must be at least {MIN_TOKEN_CHARS} characters "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return value

    @model_validator(mode="after")
    def _never_open(self) -> ConsoleSettings:
        if self.console_token is None and not self.oidc_enabled:
            raise ValueError(
                "the console needs a way to sign in: set CONDUIT_CONSOLE_TOKEN, or OIDC "
                "(CONDUIT_CONSOLE_OIDC_ISSUER, _CLIENT_ID and an allow list: CONDUIT_CONSOLE_ALLOWED_GROUPS/_EMAILS "
                "or CONDUIT_CONSOLE_ADMIN_GROUPS/_EMAILS)"
            )
        if self.console_oidc_issuer and not self.oidc_enabled:
            raise ValueError(
                "CONDUIT_CONSOLE_OIDC_ISSUER is set but OIDC is incomplete: it needs CONDUIT_CONSOLE_OIDC_CLIENT_ID "
                "and at least one of CONDUIT_CONSOLE_ALLOWED_GROUPS/_EMAILS or CONDUIT_CONSOLE_ADMIN_GROUPS/_EMAILS"
            )
        if self.token_key is None:
            # Sign-in sessions live in Redis, sealed under a key derived from it: unsealed, anyone able to write
            # Redis could write themselves an admin session. Every deployment gives the console this key already.
            raise ValueError(
                "the console needs CONDUIT_TOKEN_KEY: its sign-in sessions are sealed under a key derived from it "
                "(the same key as the proxy's and the importer's; `conduit tokens new-key` makes one)"
            )
        return self

    @property
    def oidc_enabled(self) -> bool:
        allow = self.console_allowed_groups or self.console_allowed_emails
        admin = self.console_admin_groups or self.console_admin_emails
        return bool(self.console_oidc_issuer and self.console_oidc_client_id and (allow or admin))


def split(value: str) -> frozenset[str]:
    """A comma-separated setting as a set (emails compared lower-case)."""
    return frozenset(part.strip() for part in value.split(",") if part.strip())
