"""Stage 1, fetch: the export's HTTP body from the auth proxy, chunk by chunk, never whole.

The importer holds no token: it asks the proxy like any other caller, naming
the tenant in ``X-Tenant-ID``. Answers that another try may fix (401, 408,
429, 5xx, timeouts, a proxy that is down) are :class:`Transient`; the others
(400, 403, 404...) are :class:`BadExport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import orjson

from services.importer.errors import BadExport, Transient
from services.importer.stats import Tally

_CHUNK = 256 << 10
_TRANSIENT_STATUS = frozenset({401, 408, 425, 429, 500, 502, 503, 504})


def export_url(proxy_url: str, module: str, export_date: str) -> str:
    """``{proxy}/exports/{module}?date=YYYY-MM-DD``; the proxy maps it into the provider's API base."""
    return f"{proxy_url.rstrip('/')}/exports/{quote(module, safe='')}?date={export_date}"


def max_body_bytes(max_zip_bytes: int) -> int:
    """The largest answer that can hold a zip of ``max_zip_bytes``: its base64 (4/3) and the envelope's other
    members (each at most 1 MiB, envelope.py) with room to spare."""
    return max_zip_bytes * 4 // 3 + (16 << 20)


async def fetch(
    session: aiohttp.ClientSession, url: str, tenant: str, max_bytes: int, received: Tally
) -> AsyncIterator[bytes]:
    """Yield the body of a 200 answer; raise :class:`Transient` or :class:`BadExport` for anything else.

    The body is counted into ``received`` as it arrives, after any Content-Encoding is undone, so an endless
    or gzip-bombed answer stops at ``max_bytes`` instead of at the disk or the job timeout.
    """
    try:
        async with session.get(url, headers={"X-Tenant-ID": tenant}) as response:
            if response.status != 200:
                raise await _refusal(response)
            async for chunk in response.content.iter_chunked(_CHUNK):
                received.n += len(chunk)
                if received.n > max_bytes:
                    raise BadExport(
                        "too_large",
                        f"the proxy's answer is larger than {max_bytes} bytes, more than a zip of "
                        "IMPORTER_MAX_ZIP_BYTES can take in its envelope",
                    )
                yield chunk
    except TimeoutError:
        raise Transient("proxy_timeout", f"the proxy did not answer within the timeout ({url})") from None
    except aiohttp.ClientConnectorError as exc:
        raise Transient("proxy_unreachable", f"cannot connect to the proxy: {exc.os_error}") from None
    except aiohttp.ClientError as exc:
        raise Transient("proxy_error", f"the download broke off: {type(exc).__name__}") from None


async def _refusal(response: aiohttp.ClientResponse) -> Exception:
    status = response.status
    detail = _detail(await response.content.read(2048))
    message = f"the proxy answered {status}{': ' + detail if detail else ''}"
    if status in _TRANSIENT_STATUS:
        return Transient(f"http_{status}", message, _retry_after(response.headers.get("Retry-After")))
    return BadExport(f"http_{status}", message)


def _detail(body: bytes) -> str:
    """The proxy's (or provider's) own error text, short; it never holds a token (the proxy sees to that)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error", "message", "error_description") if data.get(k)]
        return ": ".join(parts)[:300]
    return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
