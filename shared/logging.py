"""JSON-lines logging for every process, with secrets scrubbed before a line is written.

Secrets are kept out of log calls by design (they travel as ``SecretStr``); the
scrubbing processor is the second line of defence: any event key that names a
credential is masked whatever its value.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_SENSITIVE_KEYS = frozenset(
    {"access_token", "refresh_token", "token", "client_secret", "secret", "password", "authorization", "cookie"}
)
MASK = "**********"


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & _SENSITIVE_KEYS:
        event[key] = MASK
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str = "INFO", json: bool = True, cache: bool = True) -> None:
    """Route structlog and the standard library (aiohttp, arq) to one JSON-lines stream on stderr.

    ``cache=False`` is for tests: a logger cached on first use keeps its processors, so
    ``structlog.testing.capture_logs`` would see its lines or not depending on which test logged first.
    """
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log is replaced by the proxy's, which skips /health_check.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; bind request ids and tenants with ``.bind()`` or contextvars."""
    return structlog.stdlib.get_logger(name)
