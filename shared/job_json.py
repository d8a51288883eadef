"""arq job payloads and results as JSON: the one serializer/deserializer pair every arq pool and worker uses.

arq's default is pickle, and unpickling runs code: anyone able to write Redis could queue (or replace) a
job whose payload runs in the importer, which holds the database credentials and the token key. JSON
only ever decodes into data, and :func:`loads` checks the shape arq expects as well, so a payload from
an older version (pickle) or garbage is refused as :class:`PayloadRefused` (arq then fails that job,
logging its id) and never executed.

Why no MAC on the payload: a forged JSON job can only ask for work Conduit does anyway (an import, a
token refresh) with arguments the job functions check themselves (unknown tenant, module or date is
refused), and an attacker able to write Redis can already delete, delay or re-queue jobs, and write
the scheduler's ledger. A MAC would need a key in the scheduler, the console and the CLI and would
not take any of that away; sealed token records and cache entries (shared/crypto.py) are where a
secret is at stake.

Arguments and results are JSON values only (str, int, float, bool, None, lists, str-keyed dicts), so
what a job function receives is what was enqueued: a date, an enum or a dataclass is refused when
enqueueing (convert it explicitly, e.g. ``day.isoformat()``) instead of coming back as another type.
A failed job's exception is kept as its type's name and message and read back as :class:`JobFailed`.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings
from arq.connections import create_pool as arq_create_pool

# Without these, orjson would write datetimes, dataclasses and str/int subclasses (enums) as plain JSON,
# and they would come back as another type; they go to _plain's check instead.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_MESSAGE_MAX = 500
_JOB_FIELDS = {"f": str, "a": list, "k": dict, "et": int}
_RESULT_FIELDS = {"s": bool, "st": int, "ft": int}


class PayloadRefused(ValueError):
    """A job payload or result that is not JSON of the shape arq writes (its bytes are never in the message)."""


class JobFailed(Exception):
    """A failed job's exception, as read back from its result: ``"TypeName: message"``."""


def dumps(data: dict[str, Any]) -> bytes:
    """arq's ``job_serializer``: a job (``f a k t et``) or a result (plus ``s r st ft q id``) as JSON."""
    for name in ("a", "k"):
        _plain(data.get(name), name)
    result = data.get("r")
    if isinstance(result, BaseException):
        data = {**data, "r": {"error": type(result).__name__, "message": str(result)[:_MESSAGE_MAX]}}
    elif "r" in data:
        _plain(result, "r")
    return orjson.dumps(data, option=_OPTIONS)


def loads(raw: bytes) -> dict[str, Any]:
    """arq's ``job_deserializer``: the JSON ``dumps`` wrote, checked field by field, else :class:`PayloadRefused`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PayloadRefused("job payload is not JSON (written by an older version, or not by Conduit)") from None
    if not isinstance(data, dict):
        raise PayloadRefused("job payload is not a JSON object")
    _check(data, _JOB_FIELDS)
    if not (data.get("t") is None or _is_int(data["t"])):
        raise PayloadRefused("job payload field 't' is not an integer")
    data["a"] = tuple(data["a"])
    if "s" in data:
        _check(data, _RESULT_FIELDS)
        data["r"] = _failure(data.get("r")) if not data["s"] else data.get("r")
    return data


def is_refusal(result: dict[str, Any]) -> bool:
    """Whether a job's result (as ``loads`` reads it) is arq failing the job because its payload was refused."""
    # arq names the function "<unknown>" when it could not read the payload, before any function ran.
    error = result.get("r")
    return result.get("f") == "<unknown>" and isinstance(error, JobFailed) and str(error).startswith("Deserializ")


CODEC: dict[str, Any] = {"job_serializer": dumps, "job_deserializer": loads}


class JsonArqRedis(ArqRedis):
    """arq's Redis client with the JSON pair: use it wherever an ``ArqRedis`` is made (``from_url``, ``connect``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name, value in CODEC.items():
            if kwargs.get(name) is None:  # arq passes None for "not given", which means pickle
                kwargs[name] = value
        super().__init__(*args, **kwargs)


async def create_pool(settings: RedisSettings, **kwargs: Any) -> ArqRedis:
    """arq's ``create_pool`` with the JSON pair."""
    return await arq_create_pool(settings, **CODEC, **kwargs)


def _failure(result: Any) -> Any:
    if isinstance(result, dict) and set(result) == {"error", "message"}:
        return JobFailed(f"{result['error']}: {result['message']}")
    return result


def _check(data: dict[str, Any], fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        value = data.get(name)
        if not isinstance(value, kind) or (kind is int and not _is_int(value)):
            raise PayloadRefused(f"job payload field {name!r} is not a {kind.__name__}")
    if "k" in fields and not all(isinstance(key, str) for key in data["k"]):
        raise PayloadRefused("job payload field 'k' has a key that is not a string")


def _is_int(value: Any) -> bool:
    return type(value) is int


def _plain(value: Any, where: str) -> None:
    """JSON values only, so that what is enqueued is what the job function receives."""
    kind = type(value)
    if kind is float and not math.isfinite(value):
        raise TypeError(f"job {where}: {value} is not a JSON number")
    if kind in (str, int, float, bool) or value is None:
        return
    if kind in (list, tuple):
        for item in value:
            _plain(item, where)
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"job {where}: a dict key of type {type(key).__name__} is not JSON")
            _plain(item, where)
    else:
        raise TypeError(f"job {where}: a {kind.__name__} is not a JSON value; convert it explicitly")
