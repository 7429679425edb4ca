"""Watcher: list+watch one resource of one cluster into its ClusterStore, forever.

The Kubernetes protocol, as the API concepts documentation gives it:
paginated list (``limit`` + ``continue``), then a watch from the list's
resourceVersion with bookmarks and a jittered ``timeoutSeconds``.  A stream
that ends is resumed from the last resourceVersion seen (bookmarks move it
too); ``410 Gone`` (HTTP or an ERROR event) means a full relist, after which
objects the new list lacks are deleted.  Any other failure backs off (about
1 s doubling to 30 s, jittered), is logged once per change of state, and
never touches the store: the last good data keeps being served.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from kubernetai.cluster import kinds
from kubernetai.cluster.kubeapi import ApiClient, ApiError
from kubernetai.cluster.objects import ObjectError
from kubernetai.cluster.store import ClusterStore
from kubernetai.lazy_repr import LazyRepr
from kubernetai.memory import release_memory
from kubernetai.metrics import PROGRAMMING_BUCKETS, Histogram, histogram_in

__all__ = ["ResourceSpec", "Watcher", "Gone", "WatchError", "Backoff"]

log = Logger()

PAGE_SIZE = 500
WATCH_TIMEOUT = (240, 360)  # seconds, jittered per watch
# A connection refused, reset or cut costs the API server nothing, and a
# restarted one should be seen at once: such failures retry within ~1 s.
# Answers that are errors (5xx, 429) back off up to Backoff.cap.
CONNECT_RETRY_CAP = 1.0
IDLE_TIMEOUT = 120.0  # drop a watch that says nothing (not even a bookmark) for this long
REQUEST_TIMEOUT = 60.0  # a list page, or a watch's response headers, must arrive within this
MAX_LINE = 16 * 1024 * 1024


class Gone(Exception):
    """410: our resourceVersion is too old; relist."""


class WatchError(Exception):
    """The stream said something we cannot continue from."""


class IdleTimeout(Exception):
    """The watch stream was silent for too long."""


@attrs.frozen(repr=False)
class ResourceSpec(LazyRepr):
    """One list/watch target: a kind at a path, maybe a namespace and a selector."""

    kind: str
    group_path: str  # "/api/v1" or "/apis/discovery.k8s.io/v1"
    plural: str
    namespace: str = ""
    label_selector: str = ""
    field_selector: str = ""

    @property
    def path(self) -> str:
        ns = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{self.group_path}{ns}/{self.plural}"

    def selector_params(self) -> dict[str, str]:
        """The list/watch parameters that select what the API server sends."""
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    @property
    def scope(self) -> tuple[str, str]:
        return (self.kind, self.namespace)

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        sel = f" matching {self.label_selector}" if self.label_selector else ""
        return f"{self.plural}{where}{sel}"


@attrs.define(repr=False)
class Backoff(LazyRepr):
    """About ``base`` doubling to ``cap``, with ±20% jitter."""

    base: float = 1.0
    cap: float = 30.0
    rand: Callable[[], float] = random.random
    failures: int = 0

    def next(self, cap: float | None = None) -> float:
        """The next delay; ``cap`` lowers the ceiling (see CONNECT_RETRY_CAP)."""
        self.failures += 1
        delay = min(self.cap if cap is None else cap, self.base * 2 ** (self.failures - 1))
        return delay * (0.8 + 0.4 * self.rand())

    def reset(self) -> None:
        self.failures = 0


class _EventStream(Protocol):
    """Splits a chunked watch body into JSON lines, with an idle timer."""

    def __init__(self, on_event: Callable[[dict], None], clock: Any, idle: float) -> None:
        self.on_event = on_event
        self.clock = clock
        self.idle = idle
        self.buffer = b""
        self.done: defer.Deferred = defer.Deferred()
        self.error: Failure | None = None
        self.timer = clock.callLater(idle, self._idle)

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.timer.reset(self.idle)
        self.buffer += data
        if len(self.buffer) > MAX_LINE:
            self._fail(WatchError("watch event larger than 16 MiB"))
            return
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                self.on_event(json.loads(line))
            except Exception as e:  # Gone, malformed JSON, bad objects
                self._fail(e)
                return

    def _idle(self) -> None:
        self._fail(IdleTimeout(f"watch silent for {self.idle:.0f}s"))

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = Failure(exc)
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]  # a producer, too

    def stop(self) -> None:
        self._fail(defer.CancelledError())

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.timer.active():
            self.timer.cancel()
        if self.error is not None:
            self.done.errback(self.error)
        elif reason is not None and reason.check(ResponseDone, PotentialDataLoss):
            if self.buffer.strip():
                try:
                    self.on_event(json.loads(self.buffer))
                except Exception as e:
                    self.done.errback(Failure(e))
                    return
            self.done.callback(None)
        else:
            self.done.errback(reason or Failure(WatchError("watch stream lost")))


@attrs.define(eq=False, repr=False)
class Watcher(Service, LazyRepr):
    """Keeps ``store`` in step with one resource; a twisted Service."""

    watches_api = True  # how a stanza tells its watchers from other children without importing this module
    spec: ResourceSpec
    api: ApiClient
    store: ClusterStore
    clock: Any
    cluster: str = ""
    rand: Callable[[], float] = random.random
    idle_timeout: float = IDLE_TIMEOUT
    page_size: int = PAGE_SIZE
    backoff: Backoff = attrs.field(init=False)
    request_timeout: float = REQUEST_TIMEOUT
    rv: str | None = None
    gone_in_a_row: int = 0
    state: str = "starting"
    events: int = 0
    # For /status and metrics: since when in this state, the last failure, counters by reason.
    since: float = 0.0
    down_since: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    last_event_at: float = 0.0
    restarts: Counter[str] = attrs.Factory(Counter)
    relists: Counter[str] = attrs.Factory(Counter)
    programming: dict[str, Histogram] = attrs.Factory(dict)  # service_kind → DNS programming latency
    _relist_reason: str = "initial"
    _loop: defer.Deferred | None = None
    _current: Any = None

    def __attrs_post_init__(self) -> None:
        self.backoff = Backoff(rand=self.rand)
        self.store.require(self.spec.scope)

    # ------------------------------------------------------------ service
    def startService(self) -> None:
        Service.startService(self)
        self._loop = self._run()

    def stopService(self) -> defer.Deferred:
        Service.stopService(self)
        current = self._current
        if isinstance(current, _EventStream):
            current.stop()
        elif isinstance(current, defer.Deferred):
            current.cancel()
        loop, self._loop = self._loop, None
        if loop is None:
            return defer.succeed(None)
        return loop.addErrback(lambda f: None)

    # ------------------------------------------------------------ loop
    def _state(self, state: str, level: str = "info") -> None:
        """Log only when the state changes, never once per retry."""
        if state != self.state:
            self.state = state
            self.since = self.clock.seconds()
            # Since when not watching (k8s_external's ``stale``): kept through listing, backoff, retries.
            if state == "watching":
                self.down_since = 0.0
            elif not self.down_since:
                self.down_since = self.since
            getattr(log, level)(
                "{cluster}: {resource}: {state}", cluster=self.cluster, resource=self.spec.describe(), state=state
            )

    @defer.inlineCallbacks
    def _run(self) -> Any:
        while self.running:
            try:
                if self.rv is None:
                    self.relists[self._relist_reason] += 1
                    self.rv = yield self._list()
                    self.backoff.reset()  # listing works: a later failure starts from the first delay
                    self._state("synced")
                    if not self.running:  # stopped while the list finished (e.g. by a sync callback)
                        return
                yield self._watch()
                self.backoff.reset()
                self.gone_in_a_row = 0
            except Gone:
                self.rv = None
                self._relist_reason = "gone"
                self._failed("gone", "resourceVersion too old (410 Gone)")
                self.gone_in_a_row += 1
                self._state("resourceVersion too old (410 Gone): relisting")
                if self.gone_in_a_row > 1:  # a fresh list's version is gone too: do not spin
                    yield self._sleep(self.backoff.next())
            except defer.CancelledError:
                if not self.running:
                    return
            except Exception as e:
                if not self.running:
                    return
                # Any other failure breaks a run of 410s: a 410 after reconnecting is expected.
                self.gone_in_a_row = 0
                self._failed(_reason(e), _describe(e))
                delay = self.backoff.next(None if isinstance(e, ApiError) else CONNECT_RETRY_CAP)
                if isinstance(e, ApiError) and e.retry_after:
                    delay = max(delay, e.retry_after)
                if isinstance(e, ApiError) and e.code == 404 and self.rv is None and self.spec.kind in CRD_KINDS:
                    # The CRD is not installed: nothing of this kind exists (yet); keep asking.
                    self.store.relist(self.spec.scope, ())
                    self._state(f"{CRD_KINDS[self.spec.kind]}; answering without it, checking again", "warn")
                elif isinstance(e, ApiError) and e.code in (401, 403):
                    self._state(f"{_forbidden(e, self.spec)}{self._serving()}", "error")
                else:
                    self._state(f"{_describe(e)}; retrying with backoff{self._serving()}", "warn")
                yield self._sleep(delay)

    def _failed(self, reason: str, text: str) -> None:
        self.restarts[reason] += 1
        self.last_error = text
        self.last_error_at = self.clock.seconds()

    def _serving(self) -> str:
        return ", serving the last good data" if self.store.synced else ""

    @property
    def refused(self) -> bool:
        """The API refuses our credentials for this resource (401/403): a configuration problem."""
        return self.state.startswith(("forbidden", "unauthorized"))

    def _sleep(self, delay: float) -> defer.Deferred:
        d = task.deferLater(self.clock, delay, lambda: None)
        self._current = d

        def done(result: Any) -> None:
            self._current = None
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                return result  # type: ignore[return-value]
            return None

        return d.addBoth(done)

    def _request(self, d: defer.Deferred) -> defer.Deferred:
        """Track a request so stopService can cancel it, and time it out."""
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.request_timeout, expire)
        self._current = d

        def clear(result: Any) -> Any:
            self._current = None
            if timer.active():
                timer.cancel()
            if timed_out and isinstance(result, Failure):
                return Failure(defer.TimeoutError(f"no answer within {self.request_timeout:.0f}s"))
            return result

        return d.addBoth(clear)

    @defer.inlineCallbacks
    def _list(self) -> Any:
        relist = self.store.begin_relist(self.spec.scope)
        token = None
        while True:
            params: dict[str, Any] = {"limit": self.page_size}
            if token:
                params["continue"] = token
            params.update(self.spec.selector_params())
            try:
                data = yield self._request(self.api.get_json(self.spec.path, params))
            except ApiError as e:
                if e.code == 410:
                    raise Gone() from None  # the continue token expired: start over
                raise
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise WatchError("list answer without items")
            if self.spec.kind == "EndpointSlice":
                for item in data["items"]:
                    self._programmed(item)
            shrunk = (self._shrink(item) for item in data["items"])
            relist.page([value for value in shrunk if value is not None])
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                relist.finish()
                release_memory()  # the pages' freed heap back to the OS (glibc), once per list
                return meta.get("resourceVersion") or "0"

    @defer.inlineCallbacks
    def _watch(self) -> Any:
        params = {
            "watch": "1",
            "resourceVersion": self.rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(WATCH_TIMEOUT[0] + (WATCH_TIMEOUT[1] - WATCH_TIMEOUT[0]) * self.rand())),
        }
        params.update(self.spec.selector_params())
        try:
            resp = yield self._request(self.api.get(self.spec.path, params, stream=True))
        except ApiError as e:
            if e.code == 410:
                raise Gone() from None
            raise
        stream = _EventStream(self._event, self.clock, self.idle_timeout)
        self._current = stream
        if not self.running:  # stopped while the headers were on their way
            resp.deliverBody(stream)
            stream.stop()
            yield stream.done.addErrback(lambda f: None)
            return
        self._state("watching")
        resp.deliverBody(stream)
        try:
            yield stream.done
        finally:
            self._current = None

    def _programmed(self, obj: Any) -> None:
        """CoreDNS's DNS programming latency: now minus the endpoints controller's trigger time.

        As CoreDNS, only for a slice whose Service we know, also for slices of
        the first list (which makes large values at start-up there too).
        """
        meta = (obj.get("metadata") if isinstance(obj, dict) else None) or {}
        if not isinstance(meta, dict):
            return
        trigger = (meta.get("annotations") or {}).get(TRIGGER_TIME)
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not isinstance(trigger, str) or not isinstance(service, str):
            return
        when = _rfc3339(trigger)
        svc = self.store.service(str(meta.get("namespace") or ""), service) if when is not None else None
        if svc is None or when is None:
            return
        kind = "headless_with_selector" if svc.headless else "cluster_ip"
        histogram_in(self.programming, kind, PROGRAMMING_BUCKETS).observe(max(0.0, self.clock.seconds() - when))

    def _shrink(self, obj: Any) -> Any:
        """The compact object, or None (logged) for one that is malformed."""
        try:
            return kinds.convert(self.spec.kind, obj)
        except (ObjectError, TypeError, ValueError, AttributeError) as e:
            log.warn(
                "{cluster}: skipping a malformed {kind}: {error}", cluster=self.cluster, kind=self.spec.kind, error=e
            )
            return None

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind != "ERROR" and (self.backoff.failures or self.gone_in_a_row):
            # The watch is established and delivering: the next failure starts from the first delay.
            self.backoff.reset()
            self.gone_in_a_row = 0
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise WatchError(f"watch ERROR event: {obj.get('code')} {obj.get('reason') or ''}".strip())
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.rv = rv
            self.store.touch_sync()
            self.last_event_at = self.clock.seconds()
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"unknown watch event type {kind!r}")
        value = self._shrink(obj)
        if value is not None:
            self.store.apply(kind, self.spec.kind, value)
            if self.spec.kind == "EndpointSlice":
                self._programmed(obj)
        self.events += 1
        self.last_event_at = self.clock.seconds()
        if rv:
            self.rv = rv
        self.store.touch_sync()


# Kinds served only when a CRD is installed: what to say when it is not.
CRD_KINDS = {
    "ServiceImport": "the ServiceImport CRD (serviceimports.multicluster.x-k8s.io, from the Multi-Cluster Services "
    "API) is not installed in this cluster",
}


def _forbidden(e: ApiError, spec: ResourceSpec) -> str:
    """One line that says what to check after a 401 or 403."""
    # "/apis/discovery.k8s.io/v1" → "discovery.k8s.io"; "/api/v1" is the core group, "".
    group = spec.group_path.removeprefix("/apis/").rsplit("/", 1)[0] if spec.group_path.startswith("/apis/") else ""
    where = f" in namespace {spec.namespace}" if spec.namespace else " cluster-wide"
    if e.code == 401:
        return "unauthorized (HTTP 401): the API server does not accept the credentials; check the token or certificate"
    return (
        f"forbidden (HTTP 403): the credentials may not list/watch {spec.plural} (API group "
        f"'{group}'){where}; check RBAC (etc/rbac.yaml)"
    )


def _tls_reason(reasons: list) -> str:
    """Why a TLS handshake failed (unknown CA, a certificate for another name or IP), or ''."""
    from OpenSSL import SSL

    for reason in reasons:
        value = getattr(reason, "value", reason)
        if isinstance(value, SSL.Error):
            details = [part for err in value.args[0] or () for part in err if isinstance(part, str)]
            return details[-1] if details else "handshake failed"
        if type(value).__name__ == "VerificationError":  # service_identity: the name or IP does not match
            return f"the certificate is not for this address ({value})"
    return ""


def _describe(e: BaseException) -> str:
    from twisted.internet.error import ConnectError, ConnectionRefusedError
    from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

    if isinstance(e, ApiError):
        return str(e)
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectError):
        return f"cannot connect: {e}"
    if isinstance(e, (ResponseFailed, ResponseNeverReceived)):
        tls = _tls_reason(e.reasons)
        if tls:
            return f"TLS with the API server failed: {tls}"
        return "connection to the API server lost"
    if isinstance(e, defer.TimeoutError):
        return str(e)
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _rfc3339(text: str) -> float | None:
    """A Kubernetes RFC 3339 time (nanoseconds allowed) as Unix seconds, or None."""
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _reason(e: BaseException) -> str:
    """Why a watch or list failed, in one word: the ``reason`` label of watch restarts."""
    if isinstance(e, ApiError):
        return f"http_{e.code}"
    if isinstance(e, (defer.TimeoutError, defer.CancelledError)):
        return "timeout"
    if isinstance(e, ConnectError | ResponseNeverReceived):
        return "connection"
    if isinstance(e, WatchError):
        return "stream"
    return "error"
