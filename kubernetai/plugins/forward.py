"""``forward FROM TO... { except; force_tcp; prefer_udp; policy; max_concurrent }``.

Queries for names under FROM go to the upstreams through Twisted's own
``client.Resolver`` (one per upstream, so the policy decides the order).
Upstream answers are relayed as they are: NXDOMAIN keeps its SOA, other
error codes pass through.  TO is an address (``1.2.3.4``, ``1.2.3.4:53``,
``dns://[::1]:53``) or a resolv.conf-style file whose nameservers are used.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import attrs
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import client, dns, error

from kubernetai import outcome
from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.metrics import TIME_BUCKETS, Histogram, histogram_in
from kubernetai.plugin import SetupContext
from kubernetai.question import Question, ZoneResolver
from kubernetai.request import rcode_name
from kubernetai.values import arg_count, integer, ip_port, zone_args
from kubernetai.zones import is_subdomain

POLICIES = {"random", "round_robin", "sequential"}
PROPERTIES = {"except", "force_tcp", "prefer_udp", "policy", "max_concurrent"}
MAX_UPSTREAMS = 15
TIMEOUT = (2,)


def nameservers_from_file(d: Directive, path: str) -> list[tuple[str, int]]:
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    found.append(ip_port(d, parts[1].split("%", 1)[0], 53))
    except OSError as e:
        raise d.error(f"cannot read {path}: {e.strerror}") from None
    if not found:
        raise d.error(f"no nameserver in {path}")
    return found


class _QuietClient(client.Resolver):
    """Twisted's client resolver, minus a log line per query's UDP port."""

    def _connectedProtocol(self, interface: str = "") -> object:
        proto = super()._connectedProtocol(interface)
        proto.noisy = False
        return proto


@attrs.define(repr=False)
class ForwardResolver(ZoneResolver, LazyRepr):
    """Relays queries under ``zone`` to upstream DNS servers."""

    plugin_name = "forward"  # the ``plugin`` label of coredns_dns_responses_total

    zone: str
    upstreams: Sequence[tuple[str, int]]
    reactor: object = None
    excluded: tuple[str, ...] = ()
    force_tcp: bool = False
    policy: str = "random"
    max_concurrent: int = 0
    in_flight: int = 0
    rejects: int = 0  # queries refused at max_concurrent
    durations: dict[tuple[str, str], Histogram] = attrs.Factory(dict)  # (upstream, rcode) → seconds
    _next: int = 0
    _clients: list = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        ZoneResolver.__init__(self)
        self.zones = (self.zone,)
        self._clients = [_QuietClient(servers=[u], reactor=self.reactor) for u in self.upstreams]

    def _order(self) -> list:
        clients = list(self._clients)
        if self.policy == "random":
            random.shuffle(clients)
        elif self.policy == "round_robin":
            n = self._next % len(clients)
            self._next += 1
            clients = clients[n:] + clients[:n]
        return clients

    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        if any(is_subdomain(q.lname, z) for z in self.excluded):
            return defer.fail(outcome.NotMine(name))
        if self.max_concurrent and self.in_flight >= self.max_concurrent:
            self.rejects += 1
            return defer.fail(outcome.Reply(dns.EREFUSED))
        self.in_flight += 1
        d: defer.Deferred = self._ask(self._order(), [dns.Query(name, type, cls)])

        def done(result: object) -> object:
            self.in_flight -= 1
            return result

        return d.addBoth(done)

    @defer.inlineCallbacks
    def _ask(self, clients: list, queries: list) -> Generator[defer.Deferred, Any, tuple]:
        last: Exception = outcome.ServerFailure("no upstream answered")
        for upstream in clients:
            message: dns.Message
            started = self._seconds()
            try:
                if self.force_tcp:
                    message = yield upstream.queryTCP(queries, TIMEOUT[0])
                else:
                    message = yield upstream.queryUDP(queries, TIMEOUT)
                    if message.trunc:
                        message = yield upstream.queryTCP(queries, TIMEOUT[0])
            except (defer.TimeoutError, error.DNSQueryTimeoutError, CannotListenError, OSError) as e:
                last = outcome.ServerFailure(f"upstream {upstream.servers[0]} failed: {e!r}")
                continue
            self._observe(upstream.servers[0], message.rCode, self._seconds() - started)
            if message.rCode == dns.OK:
                return (message.answers, message.authority, [r for r in message.additional if r.type != 41])
            raise outcome.Reply(
                message.rCode,
                message.answers,
                message.authority,
                [r for r in message.additional if r.type != 41],
                bool(message.auth),
            )
        raise last

    def _seconds(self) -> float:
        return float(getattr(self.reactor, "seconds", time.monotonic)())

    def _observe(self, upstream: tuple[str, int], rcode: int, seconds: float) -> None:
        host, port = upstream
        key = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}", rcode_name(rcode))
        histogram_in(self.durations, key, TIME_BUCKETS).observe(seconds)

    def metrics(self) -> Iterator[Metric]:
        """CoreDNS's forward and proxy families (no health checks here: those stay empty)."""
        durations = HistogramMetricFamily(
            "coredns_proxy_request_duration_seconds",
            "Histogram of the time each request took.",
            labels=["proxy_name", "to", "rcode"],
        )
        for (to, rcode), h in sorted(self.durations.items()):
            durations.add_metric(["forward", to, rcode], h.buckets(), h.sum)
        yield durations
        rejects = CounterMetricFamily(
            "coredns_forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries were at maximum.",
        )
        rejects.add_metric([], self.rejects)
        yield rejects


def parse(d: Directive, reactor: object) -> ForwardResolver:
    args = arg_count(d, 2)
    zone = zone_args(d, args[:1])[0]
    upstreams: list[tuple[str, int]] = []
    for to in args[1:]:
        if to.startswith("tls://"):
            raise d.error("tls:// upstreams are not supported by kubernetai's forward")
        if os.path.sep in to and not to.startswith("dns://"):
            path = to if os.path.isabs(to) else os.path.join(os.path.dirname(os.path.abspath(d.file)), to)
            upstreams.extend(nameservers_from_file(d, path))
        else:
            upstreams.append(ip_port(d, to, 53))
    if len(upstreams) > MAX_UPSTREAMS:
        raise d.error(f"more than {MAX_UPSTREAMS} upstreams")
    resolver = ForwardResolver(zone, upstreams, reactor)
    for child in d.children:
        if child.name == "except":
            resolver.excluded += zone_args(child, arg_count(child, 1))
        elif child.name == "force_tcp":
            arg_count(child, 0, 0)
            resolver.force_tcp = True
        elif child.name == "prefer_udp":
            arg_count(child, 0, 0)  # our default: upstream queries start on UDP
        elif child.name == "policy":
            policy = arg_count(child, 1, 1)[0]
            if policy not in POLICIES:
                raise child.error(f"unknown policy {policy!r} (allowed: {', '.join(sorted(POLICIES))})")
            resolver.policy = policy
        elif child.name == "max_concurrent":
            resolver.max_concurrent = integer(child, arg_count(child, 1, 1)[0], 1, None, "max_concurrent")
        else:
            raise child.error(f"unknown property (known: {', '.join(sorted(PROPERTIES))})")
    return resolver


def setup(d: Directive, ctx: SetupContext) -> ForwardResolver:
    ctx.once(d)
    resolver = parse(d, ctx.reactor)
    ctx.server.metric_sources.append(resolver.metrics)
    ctx.recursive = True
    return resolver
