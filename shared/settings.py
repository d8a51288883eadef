"""Settings every Conduit process reads from the environment (prefix ``CONDUIT_``).

Each service extends :class:`CommonSettings` with its own fields; constructor
arguments override the environment, which is how the tests point a service at
their own Redis, token endpoint and upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from shared.refresh import RefreshPolicy

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class CommonSettings(BaseSettings):
    """What all three services share: where Redis and the tenants file are, the token key, logging."""

    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    tenants_file: Path = Path("tenants.yaml")
    # Fernet keys (urlsafe base64 of 32 bytes). The old key is only ever used to
    # read, so a key can be rotated without downtime: deploy NEW as TOKEN_KEY and
    # the previous one as TOKEN_KEY_OLD, then drop OLD once every record was rewritten.
    token_key: SecretStr | None = None
    token_key_old: SecretStr | None = None
    log_level: LogLevel = "INFO"
    log_json: bool = True
    # How long a client waits for Redis before the operation counts as failed.
    redis_timeout: float = Field(default=2.0, gt=0)


class TokenSettings(CommonSettings):
    """For the processes that refresh tokens (proxies on demand, workers on schedule)."""

    token_request_timeout: float = Field(default=10.0, gt=0)
    # Must outlive a token request, or a second refresher could start while the first still runs.
    token_lock_timeout: float = Field(default=30.0, gt=0)
    token_expiry_skew: float = Field(default=30.0, ge=0)
    token_backoff_max: float = Field(default=300.0, gt=0)
    # After invalid_grant/invalid_client, wait this long before trying on our own again.
    token_permanent_pause: float = Field(default=3600.0, gt=0)

    def refresh_policy(self) -> RefreshPolicy:
        # Imported here: shared.refresh brings Redis, cryptography and prometheus, which a
        # process that only reads its settings (the parent of `conduit proxy --processes N`) does not need.
        from shared.refresh import RefreshPolicy

        return RefreshPolicy(
            request_timeout=self.token_request_timeout,
            lock_timeout=self.token_lock_timeout,
            expiry_skew=self.token_expiry_skew,
            backoff_max=self.token_backoff_max,
            permanent_pause=self.token_permanent_pause,
        )
