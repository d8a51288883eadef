"""shared/job_json.py, generated: what Conduit enqueues comes back as it was, and anything else is refused.

Round trips go through arq's own (de)serialize functions with the JSON pair, as the pools and workers do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest
from arq.jobs import (
    DeserializationError,
    SerializationError,
    deserialize_job,
    deserialize_job_raw,
    deserialize_result,
    serialize_job,
    serialize_result,
)
from hypothesis import example, given
from hypothesis import strategies as st

from shared.job_json import JobFailed, JsonArqRedis, PayloadRefused, dumps, is_refusal, loads
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN

# The argument shapes Conduit's jobs take (tenant, module or provider names, YYYY-MM-DD dates, a force flag),
# and any JSON value besides, nested.
scalars = st.one_of(
    st.text(),
    st.booleans(),
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12
)
conduit_args = st.one_of(
    st.tuples(st.text(), st.text(), st.dates().map(dt.date.isoformat)),  # import_export
    st.tuples(st.text(), st.text()),  # refresh_token, scheduled
    st.tuples(st.text(), st.text(), st.booleans()),  # refresh_token, forced by an operator
)
any_args = st.lists(values, max_size=4).map(tuple)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (True is not 1, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(
    function=st.sampled_from([IMPORT_EXPORT, REFRESH_TOKEN]) | st.text(),
    args=conduit_args | any_args,
    kwargs=st.dictionaries(st.text(), values, max_size=3),
    job_try=st.none() | st.integers(1, 1000),
    enqueued=st.integers(0, 2**42),
)
@example(function=REFRESH_TOKEN, args=("acme", "demo", True), kwargs={}, job_try=None, enqueued=0)
def test_a_job_comes_back_as_it_was_enqueued(
    function: str, args: tuple[Any, ...], kwargs: dict[str, Any], job_try: int | None, enqueued: int
) -> None:
    raw = serialize_job(function, args, kwargs, job_try, enqueued, serializer=dumps)
    back = deserialize_job_raw(raw, deserializer=loads)
    assert same(back, (function, args, kwargs, job_try, enqueued))
    assert deserialize_job(raw, deserializer=loads).function == function


@given(args=conduit_args, result=values, success=st.booleans(), started=st.integers(0, 2**42))
def test_a_result_comes_back_as_it_was_written(args: tuple[Any, ...], result: Any, success: bool, started: int) -> None:
    raw = serialize_result(IMPORT_EXPORT, args, {}, 1, 0, success, result, started, started + 1, "r", "q", "id",
                           serializer=dumps)  # fmt: skip
    assert raw is not None
    back = deserialize_result(raw, deserializer=loads)
    assert same((back.args, back.result, back.success), (args, result, success))


@given(message=st.text())
def test_a_failed_jobs_exception_comes_back_as_job_failed_with_its_type_and_message(message: str) -> None:
    raw = serialize_result(IMPORT_EXPORT, (), {}, 1, 0, False, KeyError(message), 0, 1, "r", "q", "id",
                           serializer=dumps)  # fmt: skip
    assert raw is not None
    back = deserialize_result(raw, deserializer=loads)
    assert isinstance(back.result, JobFailed)
    assert str(back.result) == f"KeyError: {str(KeyError(message))[:500]}"
    assert not is_refusal(loads(raw))


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 1


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [dt.date(2024, 5, 1), dt.datetime(2024, 5, 1, tzinfo=dt.UTC), Colour.RED, Level.HIGH, Point(1), float("nan"),
     {1: "int key"}, b"bytes", {"a"}, Path("/tmp")],
    ids=repr,
)  # fmt: skip
def test_an_argument_that_would_not_come_back_as_itself_is_refused_when_enqueueing(value: Any) -> None:
    with pytest.raises(SerializationError):
        serialize_job(IMPORT_EXPORT, ("acme", value), {}, None, 0, serializer=dumps)


class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@given(raw=st.binary() | values.map(orjson.dumps))
@example(raw=b"[]")
@example(raw=b'{"f": "import_export", "a": [], "k": {}, "t": true, "et": 0}')
@example(raw=b'{"f": "import_export", "a": [], "k": {}, "t": null, "et": 0, "s": 1, "st": 0, "ft": 0}')
@example(raw=pickle.dumps({"f": IMPORT_EXPORT, "a": (), "k": {}, "t": 1, "et": 0}))
def test_any_bytes_are_a_well_formed_job_or_refused(raw: bytes) -> None:
    try:
        data = loads(raw)
    except PayloadRefused as exc:
        assert repr(raw)[2:-1] not in str(exc) or len(raw) < 2
        with pytest.raises(DeserializationError):
            deserialize_job_raw(raw, deserializer=loads)
        return
    function, args, kwargs, job_try, enqueued = deserialize_job_raw(raw, deserializer=loads)
    assert isinstance(function, str) and isinstance(args, tuple) and isinstance(kwargs, dict)
    assert (job_try is None or type(job_try) is int) and type(enqueued) is int
    if "s" in data:
        assert type(data["s"]) is bool


def test_a_pickled_payload_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    raw = pickle.dumps({"f": IMPORT_EXPORT, "a": (_Touch(marker),), "k": {}, "t": 1, "et": 0})
    with pytest.raises(DeserializationError):
        deserialize_job_raw(raw, deserializer=loads)
    with pytest.raises(DeserializationError):
        deserialize_result(raw, deserializer=loads)
    assert not marker.exists()


def test_the_json_client_keeps_the_json_pair_when_told_none() -> None:
    # arq passes None for "not given", which it reads as pickle.
    client = JsonArqRedis(job_serializer=None, job_deserializer=None)
    assert (client.job_serializer, client.job_deserializer) == (dumps, loads)
    assert JsonArqRedis.from_url("redis://127.0.0.1:1/0").job_deserializer is loads
