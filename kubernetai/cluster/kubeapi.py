"""HTTP to one cluster's API server: treq over a per-cluster pool, auth, limits.

One ``HTTPConnectionPool`` + ``Agent`` + ``HTTPClient`` per cluster (never
treq's global pool).  ``apiserver_qps``/``apiserver_burst`` are a token
bucket, ``apiserver_max_inflight`` caps requests waiting for response
headers.  A 401 refreshes the credential once and retries before the
caller's backoff takes over.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from kubernetai import __version__
from kubernetai.cluster.kubeconfig import Connection
from kubernetai.lazy_repr import LazyRepr

__all__ = ["TokenBucket", "ApiClient", "ApiError", "http_client_for"]

USER_AGENT = f"kubernetai/{__version__}".encode()


class ApiError(Exception):
    """A non-2xx answer: code, reason and (for 429) the server's Retry-After."""

    def __init__(self, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.retry_after = retry_after


@attrs.define(repr=False)
class TokenBucket(LazyRepr):
    """Requests per second with a burst; qps 0 means unlimited."""

    clock: Any
    qps: float = 0.0
    burst: int = 0
    tokens: float = 0.0
    stamp: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.burst = max(self.burst, 1)
        self.tokens = float(self.burst)
        self.stamp = self.clock.seconds()

    def acquire(self) -> defer.Deferred:
        if self.qps <= 0:
            return defer.succeed(None)
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        self.tokens -= 1  # may go negative: later callers wait longer
        if self.tokens >= 0:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self.clock.callLater(-self.tokens / self.qps, d.callback, None)
        return d


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted's HTTP client factory without "Starting/Stopping factory" lines (a third of all lines in an outage)."""

    noisy = False


def http_client_for(conn: Connection, reactor: Any) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = _QuietHTTP11ClientFactory
    pool.maxPersistentPerHost = 4
    agent = Agent(reactor, contextFactory=conn.policy(), pool=pool, connectTimeout=10)
    return HTTPClient(agent)


MAX_LIST_BODY = 128 * 2**20

# No answer from this endpoint: refused, unreachable, timed out, or the connection closed before an
# answer came (a load balancer in front of a down server closes at once; when exactly decides which
# of these Twisted raises).  Any of them moves to the next endpoint.
_UNREACHABLE = (
    ConnectError,
    ConnectionClosed,
    RequestTransmissionFailed,
    ResponseNeverReceived,
    ResponseFailed,
    defer.CancelledError,
    defer.TimeoutError,
)


@attrs.define(repr=False)
class ApiClient(LazyRepr):
    """GETs against one API server with its credentials and limits."""

    conn: Connection
    reactor: Any
    http: Any = None  # treq HTTPClient or StubTreq
    qps: float = 0.0
    burst: int = 0
    max_inflight: int = 0
    # A list page (500 objects) is a few MB; an answer that keeps growing past
    # this is an error, not something to hold in memory until the timeout.
    max_body: int = MAX_LIST_BODY
    bucket: TokenBucket = attrs.field(init=False)
    inflight: defer.DeferredSemaphore | None = attrs.field(init=False)
    # Answers by HTTP code ("error": no answer at all), for kubernetai_cluster_api_requests_total.
    codes: Counter[str] = attrs.field(init=False, factory=Counter)

    def __attrs_post_init__(self) -> None:
        if self.http is None:
            self.http = http_client_for(self.conn, self.reactor)
        self.bucket = TokenBucket(self.reactor, self.qps, self.burst)
        self.inflight = defer.DeferredSemaphore(self.max_inflight) if self.max_inflight > 0 else None

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """(the endpoint to ask now, the whole URL of ``path`` on it)."""
        base = self.conn.url_for(self.reactor.seconds())
        if self.conn.current and params and "timeoutSeconds" in params:
            # On a fallback endpoint, watches end soon, so the first is tried again.
            limit = max(1, int(self.conn.primary_retry))
            params = {**params, "timeoutSeconds": str(min(int(params["timeoutSeconds"]), limit))}
        query = f"?{urlencode(params)}" if params else ""
        return base, f"{base}{path}{query}"

    @defer.inlineCallbacks
    def get(self, path: str, params: Mapping[str, Any] | None = None, stream: bool = False) -> Any:
        """The response (headers received); raises ApiError for non-200 answers."""
        yield self.bucket.acquire()
        if self.inflight is not None:
            yield self.inflight.acquire()
        try:
            tried: set[str] = set()
            reauthorized = False
            # bounded: each endpoint is left once for not answering, credentials are read again once
            for _ in range(len(self.conn.endpoints) + 1):
                headers = {b"Accept": [b"application/json"], b"User-Agent": [USER_AGENT]}
                auth = yield self.conn.auth.header()
                if auth:
                    headers[b"Authorization"] = [auth]
                base, url = self.url(path, params)
                tried.add(base)
                try:
                    resp = yield self.http.get(url, headers=headers, unbuffered=stream)
                except _UNREACHABLE:
                    self.codes["error"] += 1
                    self.conn.fail_over(self.reactor.seconds(), base)  # refused, unreachable or timed out
                    if self.conn.url_in_use not in tried:
                        continue  # the next endpoint at once, not after this watch's backoff
                    raise
                except Exception:
                    self.codes["error"] += 1
                    raise
                self.codes[str(resp.code)] += 1
                self.conn.answered_by = base
                if resp.code == 200:
                    return resp
                body = yield _drain(resp)
                if resp.code == 401 and not reauthorized:
                    reauthorized = True
                    self.conn.auth.invalidate()
                    continue
                raise ApiError(resp.code, _reason(body), _retry_after(resp))
            raise RuntimeError("not reached: the last pass of the loop returns or raises")
        finally:
            if self.inflight is not None:
                self.inflight.release()

    @defer.inlineCallbacks
    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """A JSON answer, read as it streams in and refused once past ``max_body`` bytes."""
        resp = yield self.get(path, params, stream=True)
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > self.max_body:
                raise BodyTooLarge(f"an answer larger than {self.max_body:,} bytes from {path}")
            chunks.append(data)

        collector = getattr(self.http, "collect", treq.collect)  # StubTreq brings its own
        yield collector(resp, collect)
        try:
            return json.loads(b"".join(chunks))
        except ValueError as e:
            raise ApiError(resp.code, f"not JSON: {e}") from None


class BodyTooLarge(Exception):
    """An API answer larger than we accept (ApiClient.max_body)."""


def _drain(resp: Any) -> defer.Deferred:
    d = treq.content(resp)
    return d.addErrback(lambda _: b"")


def _reason(body: bytes) -> str:
    import json

    try:
        status = json.loads(body)
        return str(status.get("message") or status.get("reason") or "")[:200]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _retry_after(resp: Any) -> float | None:
    values = resp.headers.getRawHeaders(b"retry-after") or []
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None
