"""The chain's synchronous path (``RequestChain.answer_now``) gives exactly what its Deferred path gives.

Issue 15 (uncached answers): the server asks a block's chain through
``answer_now``, which calls kubernetai stanzas directly and goes on the
Deferred way from the first other resolver.  Every chain of up to three
resolvers drawn from stanzas (with and without fallthrough, not synced, in
another zone), table resolvers and a stanza whose lookup is overridden is
asked the same names both ways: same outcome, same sections, same trace.
"""

from __future__ import annotations

import itertools

from twisted.internet import defer
from twisted.names import dns as tdns
from twisted.python.failure import Failure

from kubernetai import outcome
from kubernetai.chain import chain
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.fallthrough import Fallthrough
from kubernetai.request import RequestInfo, request_info

from .fakeapi import namespace, service
from .test_server import TableResolver
from .test_short_path import store_of


class Overridden(KubernetesResolver):
    """A stanza subclass with its own lookup: never called directly."""

    def _lookup(self, name, cls, type, timeout):
        return super()._lookup(name, cls, type, timeout)


def stanza(zone, objects, fallthrough=False, synced=True, cls=KubernetesResolver):
    store = store_of(objects, synced)
    opts = KubernetesOptions(zones=(zone,), fallthrough=Fallthrough((".",) if fallthrough else ()))
    return cls(opts, store)


def pool():
    ns = namespace("ns")
    return {
        "east-ft": stanza("cluster.local.", [ns, service("web", "ns", ports=[("http", "TCP", 80)])], fallthrough=True),
        "west": stanza("cluster.local.", [ns, service("api", "ns", ip="10.96.0.20")]),
        "unsynced-ft": stanza("cluster.local.", [ns], fallthrough=True, synced=False),
        "other": stanza("other.local.", [ns, service("svc", "ns")]),
        "table-ft": TableResolver(
            "cluster.local.", {("extra.ns.svc.cluster.local", tdns.A): [tdns.Record_A("192.0.2.1")]}, fallthrough=True
        ),
        "table-org": TableResolver("example.org.", {("www.example.org", tdns.A): [tdns.Record_A("192.0.2.2")]}),
        "overridden": stanza("cluster.local.", [ns, service("web", "ns", ip="10.96.0.99")], cls=Overridden),
    }


NAMES = [
    b"web.ns.svc.cluster.local",
    b"API.ns.svc.Cluster.Local",
    b"extra.ns.svc.cluster.local",
    b"nope.ns.svc.cluster.local",
    b"ns.svc.cluster.local",
    b"svc.ns.svc.other.local",
    b"www.example.org",
    b"nothing.example.net",
    b"_http._tcp.web.ns.svc.cluster.local",
]
TYPES = [tdns.A, tdns.SRV, tdns.TXT, tdns.AAAA]


def _settled(result):
    """What a Deferred (already fired: nothing here waits) or a plain result holds, as a Failure or sections."""
    if isinstance(result, defer.Deferred):
        got = []
        result.addBoth(got.append)
        assert got, "every resolver here answers at once"
        result = got[0]
    if isinstance(result, BaseException):
        result = Failure(result)
    return result


def _shape(result):
    if isinstance(result, Failure):
        exc = result.value
        return (
            type(exc).__name__,
            getattr(exc, "rcode", None),
            [(rr.name.name, rr.type, rr.ttl, rr.payload) for rr in getattr(exc, "authority", ())],
        )
    return tuple([(rr.name.name, rr.type, rr.ttl, rr.payload) for rr in section] for section in result)


def _ask(c, query, now):
    info = RequestInfo("127.0.0.1", 9, "udp")
    token = request_info.set(info)
    try:
        result = c.answer_now(query, info) if now else c.query(query)
    finally:
        request_info.reset(token)
    trace = info.trace
    versions = [seen for _, seen in trace.versions]
    return _shape(_settled(result)), (trace.answered_by, trace.cacheable, versions, trace.zone_labels)


def test_every_small_chain_answers_the_same_with_and_without_deferreds():
    resolvers = pool()
    compared = 0
    for size in (1, 2, 3):
        for names in itertools.permutations(resolvers, size):
            c = chain([resolvers[n] for n in names])
            for qname, qtype in itertools.product(NAMES, TYPES):
                query = tdns.Query(qname, qtype, tdns.IN)
                assert _ask(c, query, now=True) == _ask(c, query, now=False), (names, qname, qtype)
                compared += 1
    assert compared == (7 + 42 + 210) * len(NAMES) * len(TYPES)


def test_an_empty_chain_and_a_stanza_that_falls_through_off_the_end():
    assert isinstance(chain([]).answer_now(tdns.Query(b"x.cluster.local"), RequestInfo()), Exception)
    east = pool()["east-ft"]
    got = chain([east]).answer_now(tdns.Query(b"nope.ns.svc.cluster.local"), RequestInfo())
    assert isinstance(got, outcome.FallthroughNXDomain)  # as the Deferred chain ends: the last failure
