import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from shared.crypto import RecordUnreadable, Sealer, TokenKeyError


def key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


def test_rotation_reads_old_and_writes_new() -> None:
    old, new = key(), key()
    sealed_before = Sealer(old).seal(b"record")
    rotating = Sealer(new, old)
    assert rotating.open(sealed_before) == b"record"
    assert Sealer(new).open(rotating.seal(b"record")) == b"record"
    with pytest.raises(RecordUnreadable):
        Sealer(new).open(sealed_before)


def test_empty_old_key_means_none_and_bad_keys_are_named_not_shown() -> None:
    Sealer(key(), SecretStr(""))
    with pytest.raises(TokenKeyError, match="CONDUIT_TOKEN_KEY is not set"):
        Sealer(None)
    with pytest.raises(TokenKeyError, match="CONDUIT_TOKEN_KEY_OLD is not a valid Fernet key") as err:
        Sealer(key(), SecretStr("not-a-key-secretvalue"))
    assert "secretvalue" not in str(err.value)
