import pytest

from services.auth_proxy.egress import EgressRefused, upstream_target


@pytest.mark.parametrize(
    "target",
    [
        "/resources/42",
        "/a/b?x=1&y=%20z",
        "/users/a%40b.com",
        "/",
        "/files/report.v2.csv",
        "/a/...b",
        "/a;v=1/b",
        "/a/..x;/b",
    ],
)
def test_allowed_targets_pass_unchanged(target: str) -> None:
    assert upstream_target(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/x",
        "//evil.example/x",
        "evil.example/x",
        "/a/../b",
        "/..",
        "/a/./b",
        "/a/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/%252e%252e/b",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/@evil.example/x",
        "/a@b",
        "/a%00b",
        "/a%0d%0aHost:%20evil",
        "/a b",
        "/a/..;/b",
        "/a/..;jsessionid=x/b",
        "/a/%2e%2e;/b",
        "/a/.;x/b",
        "/a/%c0%ae%c0%ae/b",
        "/a/%C1%9c",
    ],
)
def test_escaping_targets_are_refused(target: str) -> None:
    with pytest.raises(EgressRefused):
        upstream_target(target)
