"""Authenticated encryption of token records at rest.

Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``; MultiFernet gives
key rotation for free: it encrypts with the first key and decrypts with any.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
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


def new_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(name: str, key: SecretStr) -> Fernet:
    try:
        return Fernet(key.get_secret_value().encode())
    except (ValueError, TypeError):
        raise TokenKeyError(f"{name} is not a valid Fernet key (urlsafe base64 of 32 bytes)") from None
