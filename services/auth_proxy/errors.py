"""The answers the proxy gives itself (a refused request, an upstream that failed), as JSON naming the problem."""

from __future__ import annotations

import orjson
from multidict import CIMultiDict

from services.auth_proxy.transport.exchange import Exchange


class ProxyError(Exception):
    """An answer the proxy gives itself, as a JSON body naming the problem."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def answer(self, request: Exchange, req_id: str) -> None:
        headers = CIMultiDict({"Content-Type": "application/json", "X-Request-ID": req_id})
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        body = orjson.dumps({"error": self.code, "message": str(self), "request_id": req_id})
        request.answer(self.status, headers, body)
