"""The private aiohttp/asyncio members the proxy's transport relies on are all there, or the failure names one."""

from __future__ import annotations

import ast
import inspect
import os
import textwrap

import aiohttp
import pytest
from aiohttp import http_writer
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler

from devtools.aiohttp_next import next_minor_release, pinned_version
from services.auth_proxy.transport import aiohttp_private
from services.auth_proxy.transport.server import _Connection as ServerConnection
from services.auth_proxy.transport.upstream_connection import UpstreamConnection


def test_every_relied_on_member_is_there() -> None:
    gone = aiohttp_private.missing()
    assert not gone, "\n".join(gone)


def test_the_list_covers_what_the_transport_reaches() -> None:
    relied_on = {(getattr(owner, "__name__", ""), name) for owner, name, _ in aiohttp_private.RELIED_ON}
    assert relied_on == {
        ("aiohttp.http_writer", "_serialize_headers"),
        ("BaseProtocol", "_loop"),
        ("BaseProtocol", "_parser"),
        ("BaseProtocol", "_upgraded"),
        ("BaseProtocol", "_buffer_paused"),
        ("BaseProtocol", "_reading_paused"),
        ("BaseProtocol", "_pause_reading_for_buffer"),
        ("BaseProtocol", "_resume_reading_for_buffer"),
        ("BaseProtocol", "_drain_helper"),
        ("ResponseHandler", "_on_read_timeout"),
        ("SSLProtocol", "max_size"),
    }


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (BaseProtocol, "_drain_helper"),
        (BaseProtocol, "_pause_reading_for_buffer"),
        (ResponseHandler, "_on_read_timeout"),
        (http_writer, "_serialize_headers"),
    ],
)
def test_a_removed_member_is_named(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """As an aiohttp upgrade that drops one would: missing() and the import both say which and where to look."""
    monkeypatch.delattr(owner, name)
    gone = aiohttp_private.missing()
    assert len(gone) == 1
    assert f".{name}, which the proxy's transport relies on" in gone[0]
    assert f"aiohttp {aiohttp.__version__} has no" in gone[0]
    monkeypatch.setattr(aiohttp_private, "RELIED_ON", [])
    # What importing the shim does for each member: the proxy stops at start, naming it.
    with pytest.raises(aiohttp_private.AiohttpChanged, match=f"has no .*\\.{name}, which"):
        aiohttp_private._require(owner, name, "a test")


def test_a_slot_removed_from_base_protocol_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BaseProtocol, "_buffer_paused")
    assert aiohttp_private.missing() == [
        f"aiohttp {aiohttp.__version__} has no BaseProtocol._buffer_paused, which the proxy's transport relies on "
        "(whether reading is held by _pause_reading_for_buffer); see services/auth_proxy/transport/aiohttp_private.py"
    ]


def test_tls_buffer_members_missing_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio.sslproto

    real_init = asyncio.sslproto.SSLProtocol.__init__

    def without_view(self: asyncio.sslproto.SSLProtocol, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        del self._ssl_buffer_view  # type: ignore[attr-defined]

    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "__init__", without_view)
    gone = aiohttp_private.missing()
    assert len(gone) == 1 and "SSLProtocol._ssl_buffer_view" in gone[0]


@pytest.mark.skipif(
    bool(os.environ.get("CONDUIT_AIOHTTP_NEXT")), reason="make test-aiohttp-next installs the next minor on purpose"
)
def test_the_pin_is_the_tested_minor() -> None:
    """pyproject.toml allows exactly the minor version the lock installs (and these tests ran against)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pinned = pinned_version((root / "requirements.lock").read_text())
    major, minor = (int(p) for p in pinned.split(".")[:2])
    assert aiohttp.__version__ == pinned
    assert f'"aiohttp>={major}.{minor},<{major}.{minor + 1}"' in (root / "pyproject.toml").read_text()


def test_next_minor_release_is_the_newest_final_one() -> None:
    versions = ["3.13.2", "3.14.5", "3.15.0a1", "3.15.0", "3.15.2", "3.15.10rc1", "3.16.0", "4.0.0"]
    assert next_minor_release(versions, "3.14.5") == "3.15.2"
    assert next_minor_release(["3.14.5", "3.14.6"], "3.14.5") is None
    assert next_minor_release([], "3.14.5") is None


# The asyncio protocol callbacks the transport's protocols override on purpose.
_OVERRIDDEN = {"__init__", "connection_made", "connection_lost", "data_received", "eof_received", "close"}


def _names(cls: type) -> set[str]:
    """Attributes a class body assigns on ``self`` and the methods it defines."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    names = {node.name for node in body.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {
        target.id
        for node in body.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(body):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return names


@pytest.mark.parametrize("ours", [ServerConnection, UpstreamConnection], ids=lambda c: c.__name__)
def test_no_name_of_ours_shadows_one_of_aiohttps(ours: type) -> None:
    """A name aiohttp starts using in a base class (``_body``, say) would silently take over ours: this says which."""
    theirs: set[str] = set()
    for base in ours.__mro__:
        if base.__module__.startswith("aiohttp"):
            theirs |= _names(base) | set(getattr(base, "__slots__", ()))
    mine: set[str] = set()
    for cls in ours.__mro__:
        if cls.__module__.startswith("services."):
            mine |= _names(cls)
    # The shim reaches aiohttp's private members on purpose (and the tests above check those).
    relied_on = {name for _, name, _ in aiohttp_private.RELIED_ON}
    shadowed = sorted((mine & theirs) - _OVERRIDDEN - relied_on)
    assert not shadowed, f"aiohttp {aiohttp.__version__} uses these names of {ours.__name__} too: {shadowed}"
