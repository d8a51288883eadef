"""Leases of Redis database numbers: a test session and a bench never share one (devtools/redis_lease.py)."""

from __future__ import annotations

import pytest
from redis import Redis

from devtools.redis_lease import LEASE_KEY, Leased, lease, lease_first, root_url

# Numbers no test session leases (tests/conftest.py leases 1-10 and 13-15), so this test cannot take a live one.
FREE = (40, 41)


@pytest.fixture
def url(server_urls: dict[str, str]) -> str:
    root = root_url(server_urls["CONDUIT_REDIS_URL"])
    admin = Redis.from_url(f"{root}/0")  # leases live in db 0: the numbers leased here need not exist
    admin.delete(*(LEASE_KEY.format(n) for n in FREE))
    admin.close()
    return root


def test_a_leased_number_is_refused_to_a_second_holder_and_free_again_after(url: str) -> None:
    with lease(url, FREE[0]):
        with pytest.raises(Leased, match=f"database {FREE[0]}"):
            with lease(url, FREE[0]):
                pass
        with lease_first(url, FREE) as second:
            assert second == FREE[1]
    with lease(url, FREE[0]) as again:
        assert again == FREE[0]


def test_no_free_number_yields_none(url: str) -> None:
    with lease(url, FREE[0]), lease(url, FREE[1]), lease_first(url, FREE) as got:
        assert got is None


@pytest.mark.parametrize("given", ["redis://h:1/3", "redis://h:1/", "redis://h:1"])
def test_root_url_drops_the_database_number(given: str) -> None:
    assert root_url(given) == "redis://h:1"
