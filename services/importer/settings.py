"""Settings of the arq workers (``CONDUIT_WORKER_*`` and the common ``CONDUIT_*``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import TokenSettings


class ImporterSettings(TokenSettings):
    """How a worker process runs: its ops port, how often it polls the queue, how many jobs at once."""

    worker_http_host: str = "0.0.0.0"
    worker_http_port: int = Field(default=8081, ge=0, le=65535)
    # How often an idle worker looks for due jobs; bounds how late a deferred job starts.
    worker_poll_delay: float = Field(default=0.5, gt=0)
    worker_max_jobs: int = Field(default=10, gt=0)
    # Seconds a refresh job may run before arq cancels it (a token request plus the lock wait).
    worker_refresh_timeout: float = Field(default=60.0, gt=0)
    # Where the importer reaches the auth proxy; it never holds a token itself.
    proxy_url: str = "http://127.0.0.1:8080"
