"""``cache [TTL] [ZONES...] { success; denial; prefetch; serve_stale; servfail; disable; keepttl }``.

CoreDNS's cache: it caches what the plugins after it answer, for a name,
type, class and DNSSEC-OK bit, with TTLs that count down.  The server builds
the block's chain so that the resolvers after ``cache`` sit inside it
(``CacheResolver.rest``): on a miss it asks them, and keeps what they say.

It does not duplicate the server's answer cache.  An answer made only by
kubernetai stanzas (and other resolvers with ``cache_version``) is kept by
the server, exactly, for as long as their data is unchanged; ``cache`` leaves
those alone and keeps what cannot be kept that way: ``forward``'s answers,
``hosts``'s, third-party resolvers'.  What ``cache`` answers is itself never
kept by the server (its TTLs change every second).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet import defer
from twisted.names import common, dns
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.python.failure import Failure

from kubernetai import outcome
from kubernetai.changes import store_derived
from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.plugin import SetupContext
from kubernetai.question import decode
from kubernetai.request import current_request
from kubernetai.values import arg_count, check_known, duration, integer, zone_args
from kubernetai.zones import is_subdomain

MAX_TTL = 3600  # success
MAX_DENIAL_TTL = 1800
MIN_TTL = 5
CAPACITY = 9984
MAX_SERVFAIL = 300.0
PROPERTIES = {"success", "denial", "prefetch", "serve_stale", "servfail", "disable", "keepttl"}


@attrs.frozen(repr=False)
class Kind(LazyRepr):
    """``success`` or ``denial``: capacity and TTL bounds."""

    capacity: int
    max_ttl: int
    min_ttl: int


@attrs.define(repr=False)
class Item(LazyRepr):
    rcode: int
    answers: list[dns.RRHeader]
    authority: list[dns.RRHeader]
    additional: list[dns.RRHeader]
    aa: bool
    stored: float
    ttl: float  # seconds from ``stored``
    kind: str  # success, denial or servfail
    hits: list[float] = attrs.Factory(list)  # recent hit times, for prefetch
    refreshing: bool = False

    def remaining(self, now: float) -> float:
        return self.stored + self.ttl - now


def _ttl_of(rrs: Sequence[dns.RRHeader], negative: bool) -> int | None:
    ttls = []
    for rr in rrs:
        ttl = rr.ttl
        if negative and rr.type == dns.SOA:
            ttl = min(ttl, rr.payload.minimum)  # type: ignore[union-attr]
        ttls.append(ttl)
    return min(ttls) if ttls else None


def _aged(rrs: Sequence[dns.RRHeader], ttl: int) -> list[dns.RRHeader]:
    return [dns.RRHeader(rr.name.name, rr.type, rr.cls, ttl, rr.payload, rr.auth) for rr in rrs]


@attrs.define(eq=False, repr=False)
class CacheResolver(common.ResolverBase, LazyRepr):
    """The ``cache`` plugin: answers from its store, or asks ``rest`` (the resolvers after it) and keeps the answer."""

    plugin_name = "cache"

    zones: tuple[str, ...]
    success: Kind = Kind(CAPACITY, MAX_TTL, MIN_TTL)
    denial: Kind = Kind(CAPACITY, MAX_DENIAL_TTL, MIN_TTL)
    servfail: float = 5.0
    prefetch: tuple[int, float, float] | None = None  # amount, window, percentage
    serve_stale: float = 0.0
    verify_stale: bool = False
    keepttl: bool = False
    disabled: dict[str, tuple[str, ...]] = attrs.Factory(dict)  # kind → zones
    clock: Callable[[], float] = time.time
    server: str = ""
    rest: Any = None  # the block's resolvers after cache (a RequestChain), set when the block is built
    _items: dict[str, OrderedDict] = attrs.Factory(lambda: {"success": OrderedDict(), "denial": OrderedDict()})
    counts: dict[str, int] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        common.ResolverBase.__init__(self)

    wraps_rest = True  # the block builder hands it the resolvers after it

    @store_derived  # a constant: never changes, so the answer cache trusts its change count
    def cache_version(self) -> int:
        """Passing a query on does not stop the server keeping the answer; answering from here does."""
        return 0

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # ------------------------------------------------------------------ lookups
    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        if self.rest is None:
            return defer.fail(outcome.NotMine(name))
        lname = decode(name).lower()
        lname = lname if lname.endswith(".") else lname + "."
        if not any(is_subdomain(lname, z) for z in self.zones):
            return self.rest.query(dns.Query(name, type, cls), timeout)
        info = current_request()
        key = f"{lname}|{type}|{cls}|{int(info.dnssec_ok)}"
        self._count("requests")
        now = self.clock()
        item, store = self._find(key)
        if item is not None:
            left = item.remaining(now)
            if left > 0:
                self._count(f"hits_{item.kind}")
                info.trace.cacheable = False  # TTLs count down: the server must not keep this answer
                self._maybe_prefetch(key, item, name, cls, type, now)
                return self._replay(item, max(0, int(left)))
            if self.serve_stale and -left <= self.serve_stale:
                if self.verify_stale:
                    d = self._ask(key, name, cls, type, lname)
                    return d.addErrback(self._stale_unless_answered, item, info)
                self._count("served_stale")
                info.trace.cacheable = False
                self._refresh(key, item, name, cls, type, lname)
                return self._replay(item, 0)
            if store is not None:
                store.pop(key, None)
        self._count("misses")
        return self._ask(key, name, cls, type, lname)

    def _find(self, key: str) -> tuple[Item | None, OrderedDict | None]:
        for store in self._items.values():
            item = store.get(key)
            if item is not None:
                store.move_to_end(key)
                return item, store
        return None, None

    def _replay(self, item: Item, ttl: int) -> defer.Deferred:
        if self.keepttl:
            answers, authority, additional = item.answers, item.authority, item.additional
        else:
            answers, authority, additional = (_aged(s, ttl) for s in (item.answers, item.authority, item.additional))
        if item.rcode == dns.OK:
            return defer.succeed((answers, authority, additional))
        return defer.fail(outcome.Reply(item.rcode, answers, authority, additional, item.aa))

    def _stale_unless_answered(self, failure: Failure, item: Item, info: Any) -> defer.Deferred:
        self._count("served_stale")
        info.trace.cacheable = False
        return self._replay(item, 0)

    def _ask(self, key: str, name: bytes, cls: int, type: int, lname: str) -> defer.Deferred:
        info = current_request()
        d = self.rest.query(dns.Query(name, type, cls))
        return d.addBoth(self._keep, key, lname, info)

    def _keep(self, result: Any, key: str, lname: str, info: Any) -> Any:
        """Store what the rest answered, unless the server's answer cache keeps it already."""
        if info.trace.cacheable and info.trace.versions:
            return result  # made only from versioned data (kubernetai): the server keeps it exactly
        item = self._item(result)
        if item is not None and not self._disabled(item.kind, lname):
            self._put(key, item)
        return result

    def _item(self, result: Any) -> Item | None:
        now = self.clock()
        if not isinstance(result, Failure):
            answers, authority, additional = (list(x) for x in result)
            negative = not answers
            kind = "denial" if negative else "success"
            return self._bounded(dns.OK, answers, authority, additional, False, now, kind)
        exc = result.value
        if isinstance(exc, outcome.Reply):
            if exc.rcode == dns.ENAME:
                return self._bounded(
                    dns.ENAME, exc.answers, exc.authority, exc.additional, exc.authoritative, now, "denial"
                )
            if exc.rcode == dns.ESERVER and self.servfail > 0:
                return Item(dns.ESERVER, [], [], [], False, now, self.servfail, "servfail")
            return None
        if isinstance(exc, (outcome.NXDomain, outcome.FallthroughNXDomain)):
            return self._bounded(dns.ENAME, [], list(exc.authority), [], True, now, "denial")
        if isinstance(exc, (AuthoritativeDomainError, DomainError, NotImplementedError)):
            return None
        if self.servfail > 0:
            return Item(dns.ESERVER, [], [], [], False, now, self.servfail, "servfail")
        return None

    def _bounded(
        self, rcode: int, answers: list, authority: list, additional: list, aa: bool, now: float, kind: str
    ) -> Item:
        bounds = self.success if kind == "success" else self.denial
        ttl = _ttl_of(answers + authority, negative=kind == "denial")
        ttl = bounds.max_ttl if ttl is None else ttl
        ttl = max(bounds.min_ttl, min(bounds.max_ttl, ttl))
        return Item(rcode, list(answers), list(authority), list(additional), aa, now, ttl, kind)

    def _disabled(self, kind: str, lname: str) -> bool:
        zones = self.disabled.get("success" if kind == "success" else "denial")
        return zones is not None and any(is_subdomain(lname, z) for z in zones)

    def _put(self, key: str, item: Item) -> None:
        store = self._items["success" if item.kind == "success" else "denial"]
        capacity = (self.success if item.kind == "success" else self.denial).capacity
        store[key] = item
        store.move_to_end(key)
        while len(store) > capacity:
            store.popitem(last=False)
            self._count(f"evictions_{'success' if item.kind == 'success' else 'denial'}")

    def _maybe_prefetch(self, key: str, item: Item, name: bytes, cls: int, type: int, now: float) -> None:
        if self.prefetch is None or item.refreshing:
            return
        amount, window, percentage = self.prefetch
        item.hits = [t for t in item.hits if now - t <= window] + [now]
        if len(item.hits) >= amount and item.remaining(now) <= item.ttl * percentage / 100.0:
            self._count("prefetch")
            self._refresh(key, item, name, cls, type, decode(name).lower())

    def _refresh(self, key: str, item: Item, name: bytes, cls: int, type: int, lname: str) -> None:
        if item.refreshing:
            return
        item.refreshing = True
        d = self._ask(key, name, cls, type, lname)
        d.addErrback(lambda f: None)  # a refresh that fails leaves the item as it was
        d.addBoth(lambda _: setattr(item, "refreshing", False))

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> Iterator[Metric]:
        labels = ["server", "zones", "view"]
        zones = " ".join(self.zones)
        c = self.counts
        entries = GaugeMetricFamily(
            "coredns_cache_entries", "The number of elements in the cache.", labels=[*labels, "type"]
        )
        for kind, store in self._items.items():
            entries.add_metric([self.server, zones, "", kind], len(store))
        yield entries
        for name, doc, key in (
            ("requests", "The count of cache requests.", "requests"),
            (
                "misses",
                "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
                "misses",
            ),
            ("prefetch", "The number of times the cache has prefetched a cached item.", "prefetch"),
            ("served_stale", "The number of requests served from stale cache entries.", "served_stale"),
        ):
            family = CounterMetricFamily(f"coredns_cache_{name}", doc, labels=labels)
            family.add_metric([self.server, zones, ""], c.get(key, 0))
            yield family
        hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.", labels=[*labels, "type"])
        evictions = CounterMetricFamily(
            "coredns_cache_evictions", "The count of cache evictions.", labels=[*labels, "type"]
        )
        for kind in ("success", "denial"):
            hits.add_metric([self.server, zones, "", kind], c.get(f"hits_{kind}", 0))
            evictions.add_metric([self.server, zones, "", kind], c.get(f"evictions_{kind}", 0))
        yield hits
        yield evictions


def _kind(d: Directive, default_ttl: int) -> Kind:
    args = arg_count(d, 1, 3)
    capacity = integer(d, args[0], 0, None, "capacity")
    max_ttl = integer(d, args[1], 0, None, "TTL") if len(args) > 1 else default_ttl
    min_ttl = integer(d, args[2], 0, None, "MINTTL") if len(args) > 2 else MIN_TTL
    if min_ttl > max_ttl:
        raise d.error(f"MINTTL {min_ttl} is larger than TTL {max_ttl}")
    return Kind(capacity or CAPACITY, max_ttl, min_ttl)


def parse(d: Directive, block_zones: tuple[str, ...], clock: Callable[[], float] = time.time) -> CacheResolver:
    args = list(d.args)
    ttl: int | None = None
    if args and args[0].isdigit():
        ttl = integer(d, args.pop(0), 0, None, "TTL")
    zones = zone_args(d, args) if args else block_zones
    success = Kind(CAPACITY, ttl if ttl is not None else MAX_TTL, min(MIN_TTL, ttl) if ttl is not None else MIN_TTL)
    denial = Kind(
        CAPACITY, ttl if ttl is not None else MAX_DENIAL_TTL, min(MIN_TTL, ttl) if ttl is not None else MIN_TTL
    )
    r = CacheResolver(zones, success, denial, clock=clock)
    check_known(d, PROPERTIES)
    for child in d.children:
        if child.name == "success":
            r.success = _kind(child, r.success.max_ttl)
        elif child.name == "denial":
            r.denial = _kind(child, r.denial.max_ttl)
        elif child.name == "prefetch":
            pargs = arg_count(child, 1, 3)
            amount = integer(child, pargs[0], 1, None, "AMOUNT")
            window, percentage = 60.0, 10.0
            for extra in pargs[1:]:
                if extra.endswith("%"):
                    percentage = float(integer(child, extra[:-1], 10, 90, "PERCENTAGE"))
                else:
                    window = duration(child, extra)
            r.prefetch = (amount, window, percentage)
        elif child.name == "serve_stale":
            sargs = arg_count(child, 0, 2)
            r.serve_stale = duration(child, sargs[0]) if sargs else 3600.0
            if len(sargs) > 1:
                if sargs[1] not in ("immediate", "verify"):
                    raise child.error(f"invalid refresh mode {sargs[1]!r} (allowed: immediate, verify)")
                r.verify_stale = sargs[1] == "verify"
        elif child.name == "servfail":
            (text,) = arg_count(child, 1, 1)
            r.servfail = duration(child, text)
            if r.servfail > MAX_SERVFAIL:
                raise child.error(f"servfail cannot exceed {MAX_SERVFAIL:.0f}s")
        elif child.name == "disable":
            dargs = arg_count(child, 1)
            if dargs[0] not in ("success", "denial"):
                raise child.error(f"cannot disable {dargs[0]!r} (allowed: success, denial)")
            r.disabled[dargs[0]] = zone_args(child, dargs[1:]) if len(dargs) > 1 else zones
        elif child.name == "keepttl":
            arg_count(child, 0, 0)
            r.keepttl = True
    return r


def setup(d: Directive, ctx: SetupContext) -> CacheResolver:
    ctx.once(d)
    r = parse(d, ctx.zones, ctx.reactor.seconds)
    r.server = f"dns://{ctx.bind[0] if ctx.bind else ''}:{ctx.port}"
    ctx.server.metric_sources.append(r.metrics)
    return r
