"""Forwarding one request: pick the tenant's token, send upstream, stream the answer back.

The hot path avoids middlewares and label lookups; everything that can be
computed once (each provider's origin) is. Every request, a streamed upload
too, goes upstream through the one ``UpstreamPool`` (transport/upstream.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from services.auth_proxy.access_log import ACCESS_LOGGER, AccessLog
from services.auth_proxy.codings import Decoder, UndecodableAnswer, answer_codings, coded, decoded_headers, decoder_for
from services.auth_proxy.echo import BodyMask, mask_body, mask_headers
from services.auth_proxy.egress import EgressRefused, upstream_target
from services.auth_proxy.errors import ProxyError
from services.auth_proxy.headers import (
    AmbiguousHeader,
    downstream_headers,
    refuse_underscored_routing,
    request_id,
    single_value,
    upstream_headers,
)
from services.auth_proxy.metrics import REFUSED, STREAMED, RequestCounters
from services.auth_proxy.response_cache import EntryKey, ResponseCache, caller_bypasses, storable_ttl
from services.auth_proxy.settings import ProxySettings
from services.auth_proxy.token_cache import NoToken, TokenCache
from services.auth_proxy.transport.errors import CallerBodyError, UpstreamUnreachable
from services.auth_proxy.transport.exchange import Exchange
from services.auth_proxy.transport.splice import (
    SPLICE_SUPPORTED,
    CallerGone,
    Pipes,
    UpstreamCut,
    flushed,
    plain_socket,
    relay,
)
from services.auth_proxy.transport.upstream import Body, UpstreamPool, UpstreamResponse
from services.auth_proxy.transport.upstream_connection import Origin
from shared.logging import get_logger
from shared.tenants import TenantsConfig
from shared.token_store import TokenRecord

log = get_logger(ACCESS_LOGGER)

_CHUNK = 64 << 10
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NO_BODY_STATUS = frozenset({204, 304})
_NOT_CACHED_HEADERS = frozenset({"date", "age", "x-request-id"})
SPLICED, COPIED = STREAMED.labels("splice"), STREAMED.labels("copy")
_AMBIGUOUS = {
    "X-Request-ID": "ambiguous_request_id",
    "X-Tenant-ID": "ambiguous_tenant",
    "X-Provider": "ambiguous_provider",
}


@dataclass(slots=True)
class _Trace:
    """What one request accumulates for its log line and metrics."""

    req_id: str = ""
    tenant: str = "-"
    provider: str = "-"
    upstream_seconds: float | None = None
    cache: str | None = None


class Forwarder:
    """The proxy's one handler for every path that is not an operations endpoint."""

    def __init__(
        self,
        settings: ProxySettings,
        tenants: TenantsConfig,
        tokens: TokenCache,
        pool: UpstreamPool,
        cache: ResponseCache | None,
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._tokens = tokens
        self._pool = pool
        self._cache = cache
        self._origins = {name: Origin.parse(str(p.api_base_url)) for name, p in tenants.providers.items()}
        self._bases = {name: str(p.api_base_url) for name, p in tenants.providers.items()}
        self._counters = RequestCounters()
        self._replay_limit = settings.proxy_replay_body_limit
        self._buffer_limit = settings.proxy_buffer_response_limit
        self.access_log = AccessLog(settings.log_json) if settings.proxy_access_log else None
        self._pipes = Pipes() if SPLICE_SUPPORTED and settings.proxy_splice else None

    async def handle(self, request: Exchange) -> None:
        started = time.perf_counter()
        ex = _Trace()
        try:
            self._route(request, ex)
            await self._handle(request, ex)
        except ProxyError as exc:
            if exc.status < 500 or exc.code == "no_token":
                REFUSED.labels(exc.code).inc()
            exc.answer(request, ex.req_id)
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        self._counters.count(ex.tenant, ex.provider, method, request.status)
        if self.access_log is not None:
            self.access_log.write(
                {
                    "method": method,
                    "path": request.path,
                    "status": request.status,
                    "tenant": ex.tenant,
                    "provider": ex.provider,
                    "request_id": ex.req_id,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "upstream_ms": round(ex.upstream_seconds * 1000, 2) if ex.upstream_seconds is not None else None,
                    "cache": ex.cache,
                }
            )

    async def _handle(self, request: Exchange, ex: _Trace) -> None:
        try:
            target = upstream_target(request.raw_path)
        except EgressRefused as exc:
            raise ProxyError(400, "refused_target", str(exc)) from None
        cache_key, cache_ttl = None, None
        if self._cache is not None:
            cache_ttl = self._cache.route_ttl(request.method, target)
            if cache_ttl is not None and caller_bypasses(request.headers, request.body_exists):
                self._cache_result(ex, "bypass")
            elif cache_ttl is not None:
                base = self._bases[ex.provider]
                cache_key = self._cache.key(ex.tenant, ex.provider, base, target, request.headers)
                cached = await self._cache.get(cache_key)
                self._cache_result(ex, "hit" if cached else "miss")
                if cached is not None:
                    headers = CIMultiDict(cached.headers)
                    headers["Age"] = str(cached.age)
                    headers["X-Request-ID"] = ex.req_id
                    request.answer(cached.status, headers, cached.body)
                    return
        body, replayable = await self._request_body(request)
        record = await self._token(ex)
        upstream = await self._send(request, target, body, record, ex)
        if upstream.status == 401 and replayable:
            upstream, record = await self._retry_after_401(request, target, body, record, upstream, ex)
        assert record.access_token is not None
        try:
            await self._respond(request, upstream, ex, cache_key, cache_ttl, record.access_token.get_secret_value())
        finally:
            upstream.release()

    def _route(self, request: Exchange, ex: _Trace) -> None:
        """The request id, tenant and provider, each from exactly one header: decided here and nowhere else."""
        headers = request.headers
        try:
            refuse_underscored_routing(headers)
            ex.req_id = request_id(single_value(headers, "X-Request-ID"))
            tenant_id = single_value(headers, "X-Tenant-ID")
            provider = single_value(headers, "X-Provider")
        except AmbiguousHeader as exc:
            ex.req_id = ex.req_id or request_id(None)
            raise ProxyError(400, _AMBIGUOUS[exc.name], str(exc)) from None
        if not tenant_id:
            raise ProxyError(400, "missing_tenant", "the X-Tenant-ID header is required")
        tenant = self._tenants.tenants.get(tenant_id)
        if tenant is None:
            raise ProxyError(404, "unknown_tenant", f"tenant {tenant_id[:64]!r} is not configured")
        provider = provider or tenant.default
        if provider not in tenant.providers:
            raise ProxyError(404, "unknown_provider", f"tenant {tenant_id!r} has no provider {provider[:64]!r}")
        ex.tenant, ex.provider = tenant_id, provider

    async def _request_body(self, request: Exchange) -> tuple[Body, bool]:
        """Small bodies are read whole so they can be replayed; large or chunked ones stream."""
        if not request.body_exists:
            return None, True
        length = request.content_length
        if length is not None and length <= self._replay_limit:
            try:
                return await request.read(), True
            except CallerBodyError as exc:
                raise ProxyError(400, "bad_request_body", str(exc)) from None
        return request.body_chunks(_CHUNK), False

    async def _token(self, ex: _Trace) -> TokenRecord:
        try:
            return await self._tokens.get(ex.tenant, ex.provider)
        except NoToken as exc:
            raise ProxyError(503, "no_token", str(exc), retry_after=exc.retry_after) from None

    async def _send(
        self, request: Exchange, target: str, body: Body, record: TokenRecord, ex: _Trace
    ) -> UpstreamResponse:
        assert record.access_token is not None
        headers = upstream_headers(
            request.headers, f"{record.token_type} {record.access_token.get_secret_value()}", ex.req_id
        )
        sent = time.perf_counter()
        try:
            upstream = await self._pool.request(request.method, self._origins[ex.provider], target, headers, body)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ProxyError(504, "upstream_timeout", f"provider {ex.provider!r} did not answer in time") from None
        except CallerBodyError as exc:
            raise ProxyError(400, "bad_request_body", str(exc)) from None
        except UpstreamUnreachable as exc:
            # The caller learns which provider and whether TLS failed; the log keeps the OS or TLS
            # reason (addresses and certificate errors, never a header) for whoever runs the proxy.
            log.warning("upstream unreachable", provider=ex.provider, request_id=ex.req_id, error=str(exc))
            reason = ": the TLS handshake failed (is its certificate trusted?)" if exc.tls else ""
            raise ProxyError(502, "upstream_unreachable", f"provider {ex.provider!r} is unreachable{reason}") from None
        except aiohttp.ClientError as exc:
            raise ProxyError(502, "upstream_error", f"provider {ex.provider!r}: {type(exc).__name__}") from None
        ex.upstream_seconds = time.perf_counter() - sent
        self._counters.latency(ex.provider, ex.upstream_seconds)
        return upstream

    async def _retry_after_401(
        self, request: Exchange, target: str, body: Body, record: TokenRecord, first: UpstreamResponse, ex: _Trace
    ) -> tuple[UpstreamResponse, TokenRecord]:
        """Refresh once (single-flight everywhere) and send once more; else pass the first 401 back.

        Returns the answer and the record whose token it was sent with.
        """
        try:
            newer = await self._tokens.rejected(record)
        except NoToken:
            return first, record
        if newer.generation == record.generation:
            return first, record
        first.release()
        return await self._send(request, target, body, newer, ex), newer

    async def _respond(
        self,
        request: Exchange,
        upstream: UpstreamResponse,
        ex: _Trace,
        cache_key: EntryKey | None,
        cache_ttl: float | None,
        token: str,
    ) -> None:
        """The upstream's answer to the caller, the token it was sent with masked wherever it could be echoed."""
        headers = downstream_headers(upstream.headers, ex.req_id)
        mask_headers(headers, token)
        length = upstream.content_length
        no_body = request.method == "HEAD" or upstream.status in _NO_BODY_STATUS
        buffer_limit = self._buffer_limit
        if cache_key is not None and self._cache is not None:
            buffer_limit = max(buffer_limit, self._cache.max_entry_bytes)
        if coded(upstream.headers):
            decoder = self._decoder(upstream, headers, ex)
            if not no_body:
                await self._respond_decoded(request, upstream, ex, (cache_key, cache_ttl), token, headers, decoder)
                return
            length = None  # the decoded length, which a HEAD or 304 cannot tell
        if not no_body and length is not None and length <= buffer_limit:
            try:
                payload = await upstream.read()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise ProxyError(504, "upstream_timeout", f"provider {ex.provider!r} stopped sending") from None
            except aiohttp.ClientError as exc:
                raise ProxyError(502, "upstream_error", f"provider {ex.provider!r}: {type(exc).__name__}") from None
            payload = mask_body(payload, token)
            await self._maybe_store(cache_key, cache_ttl, upstream, headers, payload, ex)
            request.answer(upstream.status, headers, payload)
            return
        request.begin(upstream.status, headers, length)
        try:
            if no_body or await self._copy_body(request, upstream, ex, token):
                await request.finish()
        except ConnectionError:
            pass  # the caller hung up: nothing to answer, and not the upstream's fault

    def _decoder(self, upstream: UpstreamResponse, headers: CIMultiDict[str], ex: _Trace) -> Decoder:
        try:
            decoder = decoder_for(answer_codings(upstream.headers), self._settings.proxy_max_decoded_ratio)
        except UndecodableAnswer as exc:
            raise self._undecodable(exc, ex) from None
        decoded_headers(headers)
        return decoder

    async def _respond_decoded(
        self,
        request: Exchange,
        upstream: UpstreamResponse,
        ex: _Trace,
        cache: tuple[EntryKey | None, float | None],
        token: str,
        headers: CIMultiDict[str],
        decoder: Decoder,
    ) -> None:
        """A compressed answer decoded, masked and sent plain: whole when it decodes within the buffer limit.

        Never spliced, whatever its length: the coded bytes hide an echo from the mask, so a large one
        is decoded and masked through the process (about 1.2 ns a decoded byte, the mask included)
        rather than passed unsearched like a large plain one.
        """
        hold = self._buffer_limit
        if cache[0] is not None and self._cache is not None:
            hold = max(hold, self._cache.max_entry_bytes)
        pieces = _decoded_pieces(upstream, decoder)
        try:
            kept, size = [], 0
            try:
                async for piece in pieces:
                    kept.append(piece)
                    size += len(piece)
                    if size > hold:
                        break
                else:
                    payload = mask_body(b"".join(kept), token)
                    await self._maybe_store(*cache, upstream, headers, payload, ex)
                    request.answer(upstream.status, headers, payload)
                    return
            except (UndecodableAnswer, TimeoutError, aiohttp.ClientError) as exc:
                raise self._undecodable(exc, ex) from None
            # Too large to hold: the rest streams, a bomb or bad data past here cutting the caller short.
            COPIED.inc()
            request.begin(upstream.status, headers, None)
            if await self._stream_decoded(request, b"".join(kept), pieces, BodyMask(token), ex):
                await request.finish()
        except ConnectionError:
            pass  # the caller hung up
        finally:
            await pieces.aclose()

    async def _stream_decoded(
        self, request: Exchange, first: bytes, pieces: AsyncIterator[bytes], mask: BodyMask, ex: _Trace
    ) -> bool:
        try:
            await request.write(mask.feed(first))
            async for piece in pieces:
                masked = mask.feed(piece)
                if masked:
                    await request.write(masked)
        except (UndecodableAnswer, TimeoutError, aiohttp.ClientError) as exc:
            return _cut_short(request, ex, exc.code if isinstance(exc, UndecodableAnswer) else type(exc).__name__)
        rest = mask.rest()
        if rest:
            await request.write(rest)
        return True

    def _undecodable(self, exc: Exception, ex: _Trace) -> ProxyError:
        if isinstance(exc, UndecodableAnswer):
            log.warning("upstream answer refused", provider=ex.provider, request_id=ex.req_id, error=exc.code)
            return ProxyError(502, exc.code, f"provider {ex.provider!r}: {exc}")
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return ProxyError(504, "upstream_timeout", f"provider {ex.provider!r} stopped sending")
        return ProxyError(502, "upstream_error", f"provider {ex.provider!r}: {type(exc).__name__}")

    async def _copy_body(self, request: Exchange, upstream: UpstreamResponse, ex: _Trace, token: str) -> bool:
        """The body by ``splice`` where both legs allow it, else through the process; False if the caller left."""
        spliced = await self._splice(request, upstream, ex)
        if spliced is not None:
            SPLICED.inc()
            return spliced
        COPIED.inc()
        # Masking reads every byte (about 0.4 ns a byte): paid for answers of unknown length, where small
        # dynamic ones (an error page, an echo) come chunked, not for large sized ones (echo.py).
        return await self._stream(request, upstream, ex, BodyMask(token) if upstream.content_length is None else None)

    async def _splice(self, request: Exchange, upstream: UpstreamResponse, ex: _Trace) -> bool | None:
        """None where splicing is not possible: TLS on either leg, no known length, or an answer already read."""
        pipes = self._pipes
        transport = request.transport
        sink = plain_socket(transport)
        if pipes is None or sink is None or transport is None:
            return None
        pipe = pipes.take()
        handed = upstream.hand_over_body() if pipe is not None else None
        if handed is None or pipe is None:
            if pipe is not None:
                pipes.give_back(pipe, empty=True)
            return None
        source, taken, left = handed
        try:
            # The first write sends the held-back headers too; the relay starts once the transport is empty.
            await request.write(taken)
            await flushed(transport, sink)
            await relay(source, sink, left, pipe, pipes, self._settings.proxy_read_timeout)
        except (ConnectionError, CallerGone):
            return False
        except (UpstreamCut, TimeoutError) as exc:
            return _cut_short(request, ex, str(exc) or "no bytes within the read timeout")
        upstream.body_relayed()
        return True

    async def _stream(self, request: Exchange, upstream: UpstreamResponse, ex: _Trace, mask: BodyMask | None) -> bool:
        """Copy the body with backpressure (the token masked, given a mask); False if the caller left before the end."""
        content = upstream.content
        while True:
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                return _cut_short(request, ex, type(exc).__name__)
            ended = not chunk
            if mask is not None:
                chunk = mask.rest() if ended else mask.feed(chunk)
            try:
                if chunk:
                    # write() waits for the caller to drain: backpressure keeps memory flat.
                    await request.write(chunk)
            except ConnectionError:
                # The caller hung up: not the upstream's fault, and nothing to answer.
                return False
            if ended:
                return True

    def close(self) -> None:
        if self._pipes is not None:
            self._pipes.close()
        if self.access_log is not None:
            self.access_log.flush()

    async def _maybe_store(
        self,
        cache_key: EntryKey | None,
        cache_ttl: float | None,
        upstream: UpstreamResponse,
        headers: CIMultiDict[str],
        payload: bytes,
        ex: _Trace,
    ) -> None:
        if self._cache is None or cache_key is None or cache_ttl is None:
            return
        ttl = storable_ttl(upstream.status, upstream.headers, cache_ttl)
        if ttl is None or len(payload) > self._cache.max_entry_bytes:
            return
        kept = [(k, v) for k, v in headers.items() if k.lower() not in _NOT_CACHED_HEADERS]
        await self._cache.put(cache_key, upstream.status, kept, payload, ttl)
        self._cache_result(ex, "store")

    def _cache_result(self, ex: _Trace, result: str) -> None:
        ex.cache = result
        self._counters.cache(ex.tenant, ex.provider, result)


async def _decoded_pieces(upstream: UpstreamResponse, decoder: Decoder) -> AsyncGenerator[bytes, None]:
    content = upstream.content
    while chunk := await content.readany():
        for piece in decoder.feed(chunk):
            yield piece
    for piece in decoder.end():
        yield piece


def _cut_short(request: Exchange, ex: _Trace, error: str) -> bool:
    """The upstream failed after the status line went out: the caller's connection is closed, short of the length."""
    log.warning("upstream failed mid-response", provider=ex.provider, request_id=ex.req_id, error=error)
    request.close_connection()
    return False
