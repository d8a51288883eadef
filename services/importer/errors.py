"""Why an import stops, split by what should happen next: give up on this file, or try again later.

``code`` goes into the ledger's ``error_class`` and into metric labels, so it is
short and stable; the message is for the operator and names what was wrong and
where (line, column, member name, setting).
"""

from __future__ import annotations


class ImportFailed(Exception):
    """Base class: the run stops with ``code`` and a message."""

    transient = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


class BadExport(ImportFailed):
    """The export itself is unusable (not JSON, not a zip, missing columns...): retrying cannot help."""


class TooManyRejects(BadExport):
    """More rows were rejected than the module allows; nothing was imported."""

    def __init__(self, code: str, message: str, rejected: int) -> None:
        super().__init__(code, message)
        self.rejected = rejected


class Transient(ImportFailed):
    """Something outside the file failed (proxy, third party, database); worth trying again later."""

    transient = True

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class Busy(Exception):
    """The run cannot start now (tenant at its limit, same import running elsewhere); it is not an attempt."""

    def __init__(self, reason: str, defer: float) -> None:
        super().__init__(reason)
        self.defer = defer
