import pytest
from cryptography.fernet import Fernet
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.crypto import BoundSealer, RecordUnreadable, Sealer, TokenKeyError


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


KEY, OLD = key(), key()
sealer = BoundSealer("response cache", KEY)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(data=st.binary(max_size=300), bound=st.binary(max_size=40), other=st.binary(max_size=40))
@example(data=b"", bound=b"conduit:cache:acme:demo:d", other=b"conduit:cache:globex:demo:d")
def test_a_bound_record_opens_only_with_its_own_associated_data(data: bytes, bound: bytes, other: bytes) -> None:
    sealed = sealer.seal(data, bound)
    assert sealer.open(sealed, bound) == data
    if other != bound:
        with pytest.raises(RecordUnreadable):
            sealer.open(sealed, other)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(where=st.integers(0, 10_000), bit=st.integers(0, 7), cut=st.integers(0, 80))
def test_a_bound_record_changed_or_cut_anywhere_does_not_open(where: int, bit: int, cut: int) -> None:
    sealed = sealer.seal(b"an answer", b"k")
    spoiled = bytearray(sealed)
    spoiled[where % len(sealed)] ^= 1 << bit
    for changed in (bytes(spoiled), sealed[: cut % len(sealed)], sealed + b"x"):
        with pytest.raises(RecordUnreadable):
            sealer.open(changed, b"k")


def test_bound_records_rotate_with_the_token_key_and_stay_apart_by_purpose() -> None:
    before = BoundSealer("response cache", OLD).seal(b"r", b"k")
    assert BoundSealer("response cache", KEY, OLD).open(before, b"k") == b"r"
    assert BoundSealer("response cache", KEY, SecretStr("")).open(sealer.seal(b"r", b"k"), b"k") == b"r"
    with pytest.raises(RecordUnreadable):
        sealer.open(before, b"k")
    with pytest.raises(RecordUnreadable):
        BoundSealer("something else", KEY).open(sealer.seal(b"r", b"k"), b"k")
    with pytest.raises(TokenKeyError, match="CONDUIT_TOKEN_KEY is not set"):
        BoundSealer("response cache", None)
