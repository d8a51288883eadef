"""Tenant and provider names build Redis keys, job ids and headers: any name the tenants file accepts keeps them apart.

Names are generated from the alphabet's edges (':' and '/' that separate key parts, a
trailing newline, spaces, commas, look-alike Unicode). A tenants file holding them is
either refused with an error naming the file and each bad name, or every key and job id
built from its pairs splits back into exactly those names, and every name can be sent
as the one ``X-Tenant-ID`` / ``X-Provider`` value the proxy routes by.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared import redis_keys
from shared.jobs import import_job_id, refresh_job_id
from shared.tenants import ConfigError, load_tenants

EDGES = [":", "/", "\n", "\r", " ", "\t", ",", ".", "-", "_", "*", "\x00", "ａ", "\u0085", "é"]
names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}", fullmatch=True),
    st.lists(st.sampled_from(["a", "b", "acme", "1", *EDGES]), min_size=1, max_size=4).map("".join),
)


def _file(tenants: list[str], providers: list[str]) -> Path:
    provider = {"token_url": "https://i.example/t", "api_base_url": "https://a.example/", "client_auth_method": "none"}
    data = {
        "providers": {p: dict(provider) for p in providers},
        "tenants": {t: {"providers": {p: {"client_id": f"{t}-{p}"} for p in providers}} for t in tenants},
    }
    path = Path(tempfile.mkdtemp()) / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _routable(name: str) -> bool:
    """Whether a proxy caller can name it: one header value, read back unchanged (RFC 9110 §5.5)."""
    return name == name.strip(" \t") and "," not in name and all(0x20 <= ord(c) < 0x7F for c in name)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    tenants=st.lists(names, min_size=1, max_size=3, unique=True),
    providers=st.lists(names, min_size=1, max_size=3, unique=True),
)
# Found at e6b0bd9: the name pattern was checked with re.match, whose '$' lets a trailing newline through.
@example(tenants=["acme\n"], providers=["demo"])
@example(tenants=["a:b", "a"], providers=["c", "b:c"])
def test_a_loaded_name_keeps_keys_and_job_ids_apart(tenants: list[str], providers: list[str]) -> None:
    path = _file(tenants, providers)
    try:
        config = load_tenants(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ")
        refused = [n for n in tenants + providers if repr(n) in message]
        assert refused, message
        return
    for tenant, provider in config.pairs():
        assert _routable(tenant) and _routable(provider), (tenant, provider)
        assert redis_keys.token(tenant, provider).split(":") == ["conduit", "token", tenant, provider]
        assert redis_keys.token_lock(tenant, provider).split(":")[2:] == [tenant, provider]
        assert redis_keys.response_cache(tenant, provider, "d").split(":")[2:] == [tenant, provider, "d"]
        assert redis_keys.parse_pair(redis_keys.pair_member(tenant, provider)) == (tenant, provider)
        assert refresh_job_id(tenant, provider, 1.0).split(":") == ["refresh", tenant, provider, "1000"]
        assert import_job_id(tenant, "invoices", "2026-12-01").split(":")[1:3] == [tenant, "invoices"]
