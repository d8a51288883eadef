"""Fixtures for the `conduit` command's tests: the fake third party, and the environment of a command that fails
before it reaches one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.processes import base_env
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party(lifetime=60) as tp:
        yield tp


def unreached_env(redis_url: str, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `conduit` command whose tenant's third party is never called: nothing gets that far."""
    party = ThirdParty(url="http://127.0.0.1:9")
    return base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_DATABASE_URL=database_url,
        CONDUIT_DATABASE_CONNECT_WAIT="0",
        CONDUIT_REDIS_TIMEOUT="1",
        CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, party, ["acme"])),
        CONDUIT_TOKEN_KEY="Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
        **extra,
    )
