"""Settings every Conduit process reads from the environment (prefix ``CONDUIT_``).

Each service extends :class:`CommonSettings` with its own fields; constructor
arguments override the environment, which is how the tests point a service at
their own Redis, token endpoint and upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, FilePath, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.redis_location import RedisLocation, check_scheme, check_url, parse_sentinels

if TYPE_CHECKING:
    from shared.refresh import RefreshPolicy

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class CommonSettings(BaseSettings):
    """What all three services share: where Redis and the tenants file are, the token key, logging."""

    # hide_input_in_errors: whoever prints a ValidationError (a traceback, arq's CLI) must not print a token
    # key, a password in a URL or any other value from the environment with it.
    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore", frozen=True, hide_input_in_errors=True)

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
    # CA bundle a rediss:// server's certificate is verified against instead of the system's (a private CA).
    redis_ca_file: FilePath | None = None
    # Redis Sentinel: host:port of each Sentinel, comma-separated. Set, every process asks them where the
    # master named redis_sentinel_master is (and again after a failover); REDIS_URL then gives only the
    # database, the credentials and TLS. Empty: REDIS_URL's host is Redis.
    redis_sentinels: str = Field(default="", validate_default=True)
    redis_sentinel_master: str = "mymaster"

    # Field validators, not a model validator: pydantic would put every input (the token key too) in the error.
    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        check_scheme(url)
        return url

    @field_validator("redis_sentinels")
    @classmethod
    def _redis_location_is_usable(cls, sentinels: str, info: ValidationInfo) -> str:
        location = RedisLocation(info.data.get("redis_ca_file"), parse_sentinels(sentinels))
        if "redis_url" in info.data:
            check_url(info.data["redis_url"], location)
        return sentinels

    def redis_location(self) -> RedisLocation:
        """Where Redis is besides its URL, for ``shared.redis_connect``."""
        return RedisLocation(self.redis_ca_file, parse_sentinels(self.redis_sentinels), self.redis_sentinel_master)


class TokenSettings(CommonSettings):
    """For the processes that refresh tokens (proxies on demand, importers on schedule)."""

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
