"""Fixtures for the `conduit` command's tests: the fake third party."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.third_party import ThirdParty, running_third_party


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party(lifetime=60) as tp:
        yield tp
