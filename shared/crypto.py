"""Authenticated encryption of records at rest, under ``CONDUIT_TOKEN_KEY`` (and ``_OLD`` while rotating).

Token records: Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``;
MultiFernet gives key rotation for free: it encrypts with the first key and
decrypts with any. Records that must also be bound to where they are stored
(the proxy's response cache): :class:`BoundSealer`, AES-256-GCM-SIV with the
Redis key as associated data, under a key derived from the same one.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

# Raised here, defined apart so `conduit` can catch it without importing cryptography.
from shared.config_errors import TokenKeyError as TokenKeyError


class RecordUnreadable(Exception):
    """A stored record was not written with any of the configured keys, or was tampered with."""


class Sealer:
    """Seals and opens byte strings with the current key, opening with the old key too."""

    def __init__(self, key: SecretStr | None, old_key: SecretStr | None = None) -> None:
        if key is None:
            raise TokenKeyError("CONDUIT_TOKEN_KEY is not set (generate one with `conduit tokens new-key`)")
        keys = [_fernet("CONDUIT_TOKEN_KEY", key)]
        # An empty old key means "none" (compose and Helm leave the variable empty between rotations).
        if old_key is not None and old_key.get_secret_value():
            keys.append(_fernet("CONDUIT_TOKEN_KEY_OLD", old_key))
        self._current = keys[0]
        self._fernet = MultiFernet(keys)

    def seal(self, data: bytes) -> bytes:
        return self._current.encrypt(data)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise RecordUnreadable("token record cannot be decrypted with CONDUIT_TOKEN_KEY or _OLD") from None


class BoundSealer:
    """Seals byte strings bound to associated data (a Redis key): they open only with that same data.

    Fernet has no associated data, and a record moved to another key must not open there. The AEAD
    key is derived (HKDF-SHA256, ``purpose`` as info) from the token key, so there is no new secret to
    deploy or rotate, and what is sealed for one purpose never opens for another. GCM-SIV rather than
    GCM: nonces are random and a cache writes many entries per key; a repeated nonce in GCM would give
    away the authentication key, in GCM-SIV it only shows that two plaintexts are equal.
    """

    _NONCE = 12

    def __init__(self, purpose: str, key: SecretStr | None, old_key: SecretStr | None = None) -> None:
        Sealer(key, old_key)  # the same checks and messages as the token records'
        assert key is not None
        keys = [key] if old_key is None or not old_key.get_secret_value() else [key, old_key]
        self._aeads = [AESGCMSIV(_derived(k, purpose)) for k in keys]

    def seal(self, data: bytes, bound: bytes) -> bytes:
        nonce = os.urandom(self._NONCE)
        return nonce + self._aeads[0].encrypt(nonce, data, bound)

    def open(self, sealed: bytes, bound: bytes) -> bytes:
        nonce, box = sealed[: self._NONCE], sealed[self._NONCE :]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, box, bound)
            except (InvalidTag, ValueError):
                continue
        raise RecordUnreadable("record cannot be opened for this key with CONDUIT_TOKEN_KEY or _OLD")


def _derived(key: SecretStr, purpose: str) -> bytes:
    material = base64.urlsafe_b64decode(key.get_secret_value().encode())
    return HKDF(hashes.SHA256(), 32, salt=None, info=f"conduit {purpose}".encode()).derive(material)


def new_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(name: str, key: SecretStr) -> Fernet:
    try:
        return Fernet(key.get_secret_value().encode())
    except (ValueError, TypeError):
        raise TokenKeyError(f"{name} is not a valid Fernet key (urlsafe base64 of 32 bytes)") from None
