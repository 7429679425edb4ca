"""Who asked and how: the request context every resolver of a chain may read.

The DNS server creates one ``RequestInfo`` per query; the chain hands it to
each resolver it consults (``request_info``), and the ``log``/``errors``
plugins see each answered query as a ``QueryEvent``.  Nothing here knows
the server, so resolvers and plugins import this, never ``server``.
"""

from __future__ import annotations

import contextvars
from typing import Any

import attrs
from twisted.names import dns
from twisted.python.failure import Failure

from kubernetai import wire
from kubernetai.lazy_repr import LazyRepr
from kubernetai.zones import label_count

__all__ = [
    "MAX_CHASE_DEPTH",
    "QueryEvent",
    "RCODE_NAMES",
    "RequestInfo",
    "ask_chain",
    "Trace",
    "current_request",
    "rcode_name",
    "request_info",
]

# CNAME chases one request may make in a row (CoreDNS's upstream lookups
# stop at 8 as well); a chase beyond it answers the bare CNAME.
MAX_CHASE_DEPTH = 8


@attrs.define(repr=False)
class Trace(LazyRepr):
    """Which resolvers a query consulted, to decide whether its answer may be cached.

    A resolver opts in with ``cache_version()``: its answers then depend
    only on what that returns (a kubernetai stanza: its store's generation
    and sync state).  Any consulted resolver without it makes the answer
    uncacheable (forward, hosts, autopath, whoami, third-party ones…).
    """

    cacheable: bool = True
    versions: list = attrs.Factory(list)
    # Labels of the smallest zone a stanza answered in: an answer repeats the
    # question's spelling of that zone (see answercache.is_portable).
    zone_labels: int | None = None
    # The resolver whose result or failure became the answer (the ``plugin`` label of
    # coredns_dns_responses_total; a kubernetai stanza also counts it per cluster).
    answered_by: object = None
    failure: object = None  # why the answer is a SERVFAIL (a Failure), kept with a cached answer
    # The answer also depends on who asks: (fn(client address) → value, the value for this client),
    # e.g. autopath's client namespace.  The answer cache keeps one answer per value.
    vary: Any = None

    def answered_in(self, lzone: str) -> None:
        """A stanza answered in ``lzone``, one of its zones as matched (lower-cased, fully qualified)."""
        labels = label_count(lzone)
        self.zone_labels = labels if self.zone_labels is None else min(self.zone_labels, labels)

    def consulted(self, resolver: object) -> None:
        version = getattr(resolver, "cache_version", None)
        if version is None:
            self.cacheable = False
        else:
            self.versions.append((version, version()))


@attrs.define(eq=False, repr=False)
class RequestInfo(LazyRepr):
    """Who asked and how, for plugins that answer by it (whoami, transfer, autopath).

    Read-only by convention (``chased`` makes another); not attrs-frozen,
    which made it the dearest object of an uncached answer to create.
    """

    host: str = ""
    port: int = 0
    proto: str = "udp"
    ixfr_serial: int | None = None
    trace: Trace = attrs.Factory(Trace)
    # How many CNAME chases led to this query (an ExternalName's target asked
    # through the chain is one); bounded per request, see MAX_CHASE_DEPTH.
    chase_depth: int = 0
    dnssec_ok: bool = False  # the query's DO bit (the cache plugin keeps DO answers apart)

    def chased(self) -> RequestInfo:
        """The same request, one CNAME chase deeper (same trace: the answer depends on it too)."""
        return attrs.evolve(self, chase_depth=self.chase_depth + 1)


# The request being answered.  The server sets it around the start of the
# chain, and the chain sets it again around every resolver it consults, so a
# resolver sees it however the ones before it declined (chain.py).
request_info: contextvars.ContextVar[RequestInfo] = contextvars.ContextVar("request_info")


def current_request() -> RequestInfo:
    """The request being answered; outside our server (a stock Twisted one), a fresh empty one.

    Never a shared default: its ``Trace`` is mutable and would grow forever.
    """
    try:
        return request_info.get()
    except LookupError:
        return RequestInfo()


RCODE_NAMES = {
    dns.OK: "NOERROR",
    dns.EFORMAT: "FORMERR",
    dns.ESERVER: "SERVFAIL",
    dns.ENAME: "NXDOMAIN",
    dns.ENOTIMP: "NOTIMP",
    dns.EREFUSED: "REFUSED",
    wire.BADVERS: "BADVERS",
}


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, f"RCODE{rcode}")


@attrs.frozen(repr=False)
class QueryEvent(LazyRepr):
    """One answered query, as the ``log`` and ``errors`` plugins see it."""

    remote: str
    port: int
    id: int
    qtype: int
    qclass: int
    qname: str
    proto: str
    size: int
    do: bool
    bufsize: int
    rcode: int
    flags: str
    rsize: int
    duration: float
    ancount: int = 0
    failure: Failure | None = None

    @property
    def type_name(self) -> str:
        if self.qtype == dns.ALL_RECORDS:
            return "ANY"  # Twisted calls it ALL_RECORDS; everyone else, CoreDNS's log included, ANY
        return dns.QUERY_TYPES.get(self.qtype) or dns.EXT_QUERIES.get(self.qtype) or f"TYPE{self.qtype}"

    @property
    def class_name(self) -> str:
        return dns.QUERY_CLASSES.get(self.qclass) or f"CLASS{self.qclass}"


def ask_chain(chain: Any, name: str, type: int, info: RequestInfo) -> Any:
    """``chain.query`` for ``name`` with ``info`` as the request being answered (a CNAME's target, one level deeper)."""
    token = request_info.set(info)
    try:
        return chain.query(dns.Query(name.rstrip("."), type, dns.IN))
    finally:
        request_info.reset(token)
