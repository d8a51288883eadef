"""A token endpoint that echoes what it was sent never gets a secret into an error message, in any spelling.

The message of a failed token request goes into the log, into the token record's
``last_error`` and into the 503 a caller gets. Providers echo their request in
``error_description``: the form body (URL-encoded) or the Basic header (base64 of
``client_id:client_secret``). Before this test only the bare secret was scrubbed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import quote, quote_plus

from authlib.integrations.httpx_client import OAuthError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.oauth import _classify, secret_forms
from shared.tenants import Credentials

# How a provider could repeat a secret it was sent (client_id, secret) -> text.
ECHOES: dict[str, Callable[[str, str], str]] = {
    "bare": lambda cid, s: s,
    "form body": lambda cid, s: f"client_id={quote_plus(cid)}&client_secret={quote_plus(s)}",
    "percent-encoded": lambda cid, s: quote(s, safe=""),
    "lower-case percent-encoding": lambda cid, s: quote(s, safe="").lower(),
    "basic header as authlib sends it": lambda cid, s: "Basic " + base64.b64encode(f"{cid}:{s}".encode()).decode(),
    "basic header, RFC 6749 encoding": lambda cid, s: (
        "Basic " + base64.b64encode(f"{quote_plus(cid)}:{quote_plus(s)}".encode()).decode()
    ),
    "basic header without padding": lambda cid, s: base64.b64encode(f"{cid}:{s}".encode()).decode().rstrip("="),
    "json-escaped": lambda cid, s: s.replace("/", "\\/"),
}

secrets = st.text(st.sampled_from("abcXYZ019+/=&%:~._- é"), min_size=8, max_size=40)
client_ids = st.text(st.sampled_from("abc019-_.+ "), min_size=1, max_size=12)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    client_id=client_ids,
    secret=secrets,
    refresh=secrets,
    echo=st.sampled_from(sorted(ECHOES)),
    which=st.sampled_from(["client_secret", "refresh_token"]),
    before=st.text(max_size=30),
)
# Found: a form body echoed with the secret URL-encoded, and the Basic header echoed as sent.
@example(client_id="acme", secret="s3cr3t+/=x", refresh="r" * 8, echo="form body", which="client_secret", before="")
@example(
    client_id="acme",
    secret="plainsecret",
    refresh="r" * 8,
    echo="basic header as authlib sends it",
    which="client_secret",
    before="invalid credentials in ",
)
def test_no_secret_survives_in_a_token_error(
    client_id: str, secret: str, refresh: str, echo: str, which: str, before: str
) -> None:
    if which == "refresh_token" and echo.startswith("basic"):
        which = "client_secret"  # a refresh token never travels in a Basic header
    credentials = Credentials(client_id, SecretStr(secret), SecretStr(refresh))
    echoed = ECHOES[echo](client_id, secret if which == "client_secret" else refresh)
    error = OAuthError(error="invalid_client", description=f"{before}{echoed} was refused")

    message = str(_classify(error, 1.0, secret_forms(credentials, SecretStr(refresh))))

    sent = [(name, secret) for name in ECHOES] + [(name, refresh) for name in ECHOES if not name.startswith("basic")]
    for form in (ECHOES[name](client_id, value) for name, value in sent):
        assert form.removeprefix("Basic ").lower() not in message.lower(), (form, message)
