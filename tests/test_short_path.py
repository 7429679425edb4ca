"""The server's short path (kubernetai/shortpath.py) answers exactly as the general path.

Issue 15 (uncached answers): a Service's own name, its ``_port._proto`` SRV
and their NODATA/NXDOMAIN neighbours are answered as bytes without the
general path's objects.  That is a second way to the same answers, so it is
held to the first: over random clusters (ClusterIP with IPv4/IPv6/both,
headless and ExternalName Services, ports or none, missing namespaces),
random stanza options (zones, ``namespaces``, ``fallthrough``, ``ttl``,
``multicluster``, ``ignore empty_service``, not synced) in chains of one or
two stanzas, and random queries (name shapes, letter case, types, EDNS, DO,
UDP and TCP), a server with the short path and one without give the same
bytes and keep the same cache entries (what they depend on included).
"""

from __future__ import annotations

import random

import attrs
import dns.edns
import dns.message
import dns.rdatatype
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.names import dns as tdns

from kubernetai import shortpath
from kubernetai.chain import chain
from kubernetai.cluster.kinds import convert
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.cluster.store import ClusterStore, FineVersion
from kubernetai.fallthrough import Fallthrough
from kubernetai.metrics import QueryMeter
from kubernetai.server import Block, KubeDNSServerFactory

from .fakeapi import namespace, service, slice_
from .test_server import TableResolver

NAMES = ("web", "api", "db", "nope")
NAMESPACES = ("ns0", "ns1", "gone")
IPS = ("10.96.0.1", "10.96.0.2", "fd00::1", "fd00::0:1", "10.96.0.1")
PORTS = (("http", "TCP", 80), ("dns", "UDP", 53), (None, "TCP", 8080), ("http", "UDP", 80), ("h2", "TCP", 80))
ZONES = (("cluster.local.",),) * 4 + (("cluster.local.", "example.org."), (".",), ("example.org.",), ("local.",))
TYPES = (
    "A",
    "A",
    "AAAA",
    "SRV",
    "SRV",
    "TXT",
    "MX",
    "CNAME",
    "PTR",
    "NS",
    "SOA",
    "HTTPS",
    "ANY",
    "NAPTR",
    "AXFR",
    "TYPE99",
)


def store_of(objs, synced=True):
    """A store holding ``objs``; not ``synced``: added by watch events, never listed whole."""
    store = ClusterStore(clock=lambda: 1700000000.0)
    for kind in ("Namespace", "Service", "EndpointSlice"):
        store.require((kind, ""))
    for obj in objs:
        store.apply("ADDED", obj["kind"], convert(obj["kind"], obj))
    if synced:
        for kind in ("Namespace", "Service", "EndpointSlice"):
            store.relist((kind, ""), list(store.objects.get(kind, {}).values()))
    return store


@st.composite
def services(draw, name=None, ns=None):
    name = name or draw(st.sampled_from(NAMES[:3]))
    ns = ns or draw(st.sampled_from(NAMESPACES))
    kind = draw(st.sampled_from(("ClusterIP",) * 6 + ("Headless", "ExternalName")))
    ports = draw(st.lists(st.sampled_from(PORTS), max_size=3, unique=True))
    if kind == "ExternalName":
        target = draw(st.sampled_from(("db.example.com", "api.ns0.svc.cluster.local", "10.1.2.3")))
        return [service(name, ns, type="ExternalName", external_name=target, ports=ports)]
    if kind == "Headless":
        objs = [service(name, ns, ip=None, ports=ports)]
        if draw(st.booleans()):
            objs.append(slice_(name, ["10.200.0.1", "10.200.0.2"], ns, ports=ports))
        return objs
    ips = draw(st.lists(st.sampled_from(IPS), min_size=1, max_size=3))
    return [service(name, ns, ip=ips, ports=ports)]


@st.composite
def stanzas(draw):
    objs = [namespace(ns) for ns in NAMESPACES[:2] if draw(st.booleans()) or ns == "ns0"]
    for name in NAMES[:3]:  # the names asked most, mostly there
        if draw(st.sampled_from((True,) * 4 + (False,))):
            objs.extend(draw(services(name, "ns0")))
    for group in draw(st.lists(services(), max_size=3)):
        objs.extend(group)
    store = store_of(objs, synced=draw(st.sampled_from((True,) * 5 + (False,))))  # mostly synced
    zones = draw(st.sampled_from(ZONES))
    opts = KubernetesOptions(
        zones=zones,
        namespaces=draw(st.sampled_from(((), (), ("ns0",)))),
        fallthrough=Fallthrough(draw(st.sampled_from(((), (), (".",), ("cluster.local.",), ("example.org.",))))),
        ttl=draw(st.sampled_from((5, 30))),
        multicluster=draw(st.sampled_from(((), (), (), (zones[0],)))),
        ignore_empty_service=draw(st.sampled_from((False,) * 5 + (True,))),
    )
    return KubernetesResolver(opts, store)


@st.composite
def queries(draw):
    zone = draw(st.sampled_from(("cluster.local", "cluster.local", "cluster.local", "example.org", "other.test")))
    svc, ns = draw(st.sampled_from(NAMES)), draw(st.sampled_from(("ns0", "ns0", "ns0") + NAMESPACES))
    port = draw(st.sampled_from(("_http", "_http", "_dns", "http", "_h2", "_nope", "_")))
    proto = draw(st.sampled_from(("_tcp", "_tcp", "_udp", "_sctp", "tcp")))
    shape = draw(
        st.sampled_from(
            (
                "{svc}.{ns}.svc.{zone}",
                "{svc}.{ns}.svc.{zone}",
                "{svc}.{ns}.svc.{zone}",
                "{svc}.{ns}.svc.{zone}",
                "{port}.{proto}.{svc}.{ns}.svc.{zone}",
                "{port}.{proto}.{svc}.{ns}.svc.{zone}",
                "{port}.{proto}.{svc}.{ns}.svc.{zone}",
                "x.{svc}.{ns}.svc.{zone}",
                "{svc}.{ns}.pod.{zone}",
                "{ns}.svc.{zone}",
                "{zone}",
                "a.b.{svc}.{ns}.svc.{zone}",
                "{svc}.{ns}.svc.{ns}.svc.{zone}",
                "{svc}.{ns}.svc",
                "{svc}.{ns}.svc.{zone}.",
            )
        )
    )
    name = shape.format(svc=svc, ns=ns, zone=zone, port=port, proto=proto)
    rnd = random.Random(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):  # DNS 0x20
        name = "".join(c.upper() if rnd.random() < 0.3 else c for c in name)
    q = dns.message.make_query(name.rstrip(".") + ".", draw(st.sampled_from(TYPES)))
    q.id = rnd.randrange(65536)
    q.flags = draw(st.sampled_from((dns.flags.RD, 0, dns.flags.RD | dns.flags.CD)))
    edns = draw(st.sampled_from((None, None, 512, 1232, 4096, 65535)))
    if edns is not None:
        options = [dns.edns.GenericOption(10, b"12345678")] if draw(st.booleans()) else []
        q.use_edns(0, dns.flags.DO if draw(st.booleans()) else 0, payload=edns, options=options)
    return q.to_wire(), draw(st.sampled_from(("udp", "udp", "tcp")))


class Gate:
    """An acl that refuses AAAA, filters TXT, drops MX and lets the rest in (kubernetai.plugins.acl's ``decide``)."""

    def decide(self, host, qtype, lname):
        return {tdns.AAAA: "block", tdns.TXT: "filter", tdns.MX: "drop"}.get(qtype, "allow")


def factory(resolvers, recursive, short, metered=False, observed=False, rotate=False, gate=None):
    """A server of one block over ``resolvers``; ``metered``: with prometheus; ``observed``: a log of its events."""
    block = Block((".",), chain(list(resolvers)), recursive=recursive, metered=metered, rotate=rotate, gate=gate)
    f = KubeDNSServerFactory(blocks=[block], clock=task.Clock())
    f.short_path = short
    if metered:
        f.meter = QueryMeter("dns://:53")
    f.events = []
    if observed:
        block.observers.append(f.events.append)
    return f


def accounted(f):
    """What a server counted and told its observers, comparable across two servers."""
    events = [
        attrs.evolve(e, failure=None if e.failure is None else (type(e.failure.value), str(e.failure.value)))
        for e in f.events
    ]
    return events, (f.meter.counts, f.meter.sums) if f.meter is not None else None


ADDRESS = ("127.0.0.1", 5353)


def answered(f, data, proto):
    got = []
    f.handle_packet(data, ADDRESS, proto).addCallback(got.append)
    assert len(got) == 1
    return got[0]


def _version(fn, value):
    if isinstance(fn, FineVersion):
        return ("fine", fn._key, id(fn._store), value)
    return (getattr(fn, "__func__", fn).__name__, id(getattr(fn, "__self__", None)), value)


def entries(f):
    """The answer cache's entries, with what they depend on, comparable across two servers."""
    out = []
    for slot, e in f.answer_cache._entries.items():
        versions = [_version(fn, v) for fn, v in e.versions]
        out.append(
            (slot, e.body, e.spelling, e.zone_labels, versions, e.rcode, e.aa, e.truncated, e.ancount)
            + (e.qtype, e.lname, e.plain, e.rotation_run, e.metric_head, e.block is f.blocks[0])
            + ((None,) if e.failure is None else (type(e.failure.value), str(e.failure.value)))
        )
    return out


# After the stanzas, a resolver of another kind (forward, hosts...): asked only when they pass the name on.
AFTER = TableResolver("cluster.local.", {("web.ns0.svc.cluster.local", tdns.A): [tdns.Record_A("192.0.2.1")]})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(stanzas(), min_size=1, max_size=2),
    st.lists(queries(), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(((False, False, False), (True, True, False), (True, False, True), (False, True, True))),
    st.sampled_from(((False, None), (True, None), (False, Gate()), (True, Gate()))),
)
def test_short_path_answers_as_the_general_path(resolvers, asked, recursive, kinds, filters):
    metered, observed, after = kinds
    rotate, gate = filters
    resolvers = resolvers + [AFTER] if after else resolvers
    short = factory(resolvers, recursive, True, metered, observed, rotate, gate)
    general = factory(resolvers, recursive, False, metered, observed, rotate, gate)
    for data, proto in asked:
        first = answered(general, data, proto)
        assert answered(short, data, proto) == first, (data, proto)
        assert answered(short, data, proto) == answered(general, data, proto)  # and from the cache
    assert entries(short) == entries(general)
    assert accounted(short) == accounted(general)
    assert short.blocks[0].rotation == general.blocks[0].rotation


def cluster():
    objs = [
        namespace("ns0"),
        service("web", "ns0", ip=["10.96.0.1", "fd00::1"], ports=[("http", "TCP", 80), ("dns", "UDP", 53)]),
        service("db", "ns0", ip=None),
    ]
    return store_of(objs)


def test_the_short_path_takes_the_common_questions_and_leaves_the_rest():
    """It is used where meant (else the test above compares the general path with itself)."""
    r = KubernetesResolver(KubernetesOptions(zones=("cluster.local.",)), cluster())
    f = factory([r], False, True)
    taken = {
        ("web.ns0.svc.cluster.local", "A"): 1,
        ("WEB.ns0.svc.Cluster.Local", "AAAA"): 1,
        ("_http._tcp.web.ns0.svc.cluster.local", "SRV"): 1,
        ("web.ns0.svc.cluster.local", "TXT"): 0,  # NODATA
        ("web.ns0.svc.cluster.local", "HTTPS"): 0,
        ("web.ns0.svc.cluster.local", "ANY"): 0,  # NODATA, as every type but A, AAAA and SRV
        ("nothing.ns0.svc.cluster.local", "A"): 0,  # NXDOMAIN
        ("web.gone.svc.cluster.local", "AAAA"): 0,
        ("_nope._tcp.web.ns0.svc.cluster.local", "SRV"): 0,
    }
    for (name, qtype), count in taken.items():
        data = dns.message.make_query(name, qtype, use_edns=0).to_wire()
        out = shortpath.answer(f, data, ADDRESS, "udp")
        assert out is not None, (name, qtype)
        assert len(dns.message.from_wire(out).answer) == count, (name, qtype)
    left = [
        ("db.ns0.svc.cluster.local", "A"),  # headless
        ("web.ns0.svc.cluster.local", "SRV"),  # SRV of the plain name
        ("_http._tcp.web.ns0.svc.cluster.local", "A"),
        ("x.web.ns0.svc.cluster.local", "A"),  # an endpoint name
        ("1-2-3-4.ns0.pod.cluster.local", "A"),
        ("ns0.svc.cluster.local", "A"),
        ("web.ns0.svc.cluster.local", "AXFR"),
        ("web.ns0.svc.elsewhere", "A"),  # no stanza: SERVFAIL
        ("w\\.b.ns0.svc.cluster.local", "A"),  # a dot inside a label
    ]
    for name, qtype in left:
        data = dns.message.make_query(name, qtype).to_wire()
        assert shortpath.answer(f, data, ADDRESS, "udp") is None, (name, qtype)
    # What acl does not let in is left to the general path, as is a chain that reaches another kind of resolver.
    f.blocks[0].gate = Gate()
    data = dns.message.make_query("web.ns0.svc.cluster.local", "AAAA").to_wire()
    assert shortpath.answer(f, data, ADDRESS, "udp") is None
    data = dns.message.make_query("web.ns0.svc.cluster.local", "A").to_wire()
    assert shortpath.answer(f, data, ADDRESS, "udp") is not None
    f = factory([KubernetesResolver(KubernetesOptions(zones=("example.org.",)), cluster()), AFTER], False, True)
    assert shortpath.answer(f, data, ADDRESS, "udp") is None
    # A stanza whose class changes how it answers (an embedder's subclass) is asked the general way.

    class Decides(KubernetesResolver):
        def decide(self, q, name, type, info):
            return super().decide(q, name, type, info)

    assert KubernetesResolver.short_ok() and not Decides.short_ok()
    f = factory([Decides(KubernetesOptions(zones=("cluster.local.",)), cluster())], False, True)
    assert shortpath.answer(f, data, ADDRESS, "udp") is None


def rich_store(synced=True):
    objs = [
        namespace("ns0"),
        namespace("ns1"),
        service("web", "ns0", ip=["10.96.0.1", "fd00::1"], ports=[("http", "TCP", 80), ("dns", "UDP", 53)]),
        service(
            "api", "ns0", ip=["10.96.0.2", "10.96.0.2", "10.96.0.3"], ports=[("http", "TCP", 80), ("h", "TCP", 80)]
        ),
        service("six", "ns1", ip=["fd00::2"], ports=[(None, "TCP", 8080)]),
        service("multi", "ns0", ip=["10.96.0.5", "10.96.0.6"], ports=[("a", "TCP", 80), ("b", "TCP", 81)]),
        service("many", "ns0", ip=["10.96.0.7"], ports=[(f"p{i}", "TCP", 9000 + i) for i in range(20)]),
        service("bare", "ns0", ip=["10.96.0.4"], ports=[]),
        service("db", "ns0", ip=None, ports=[("pg", "TCP", 5432)]),
        slice_("db", ["10.200.0.1", "10.200.0.2"], "ns0", ports=[("pg", "TCP", 5432)]),
        service("ext", "ns0", type="ExternalName", external_name="db.example.com"),
    ]
    return store_of(objs, synced)


def test_every_common_question_of_a_rich_cluster_answers_the_same_both_ways():
    """Every name shape × type × EDNS of a fixed cluster, under several option sets and chains."""
    default = KubernetesOptions(zones=("cluster.local.",))
    chains = [
        [KubernetesResolver(default, rich_store())],
        [KubernetesResolver(KubernetesOptions(zones=(".",), ttl=30), rich_store())],
        [KubernetesResolver(KubernetesOptions(zones=("cluster.local.",), namespaces=("ns1",)), rich_store())],
        [
            KubernetesResolver(
                KubernetesOptions(zones=("cluster.local.",), fallthrough=Fallthrough((".",))), rich_store()
            ),
            KubernetesResolver(KubernetesOptions(zones=("other.", "cluster.local.")), rich_store()),
        ],
        [
            KubernetesResolver(KubernetesOptions(zones=("other.",)), rich_store()),
            KubernetesResolver(
                KubernetesOptions(zones=("cluster.local.",), fallthrough=Fallthrough((".",))), rich_store()
            ),
        ],
        [KubernetesResolver(default, rich_store(synced=False))],
    ]
    names = []
    for svc in ("web", "api", "six", "multi", "many", "bare", "db", "ext", "nope"):  # many: SRV past 512 bytes
        for ns in ("ns0", "ns1", "gone"):
            names += [f"{svc}.{ns}.svc.cluster.local", f"{svc.upper()}.{ns}.svc.Cluster.LOCAL"]
            names += [
                f"_{p}._{t}.{svc}.{ns}.svc.cluster.local"
                for p in ("http", "dns", "pg", "h", "")
                for t in ("tcp", "udp")
            ]
    names += [
        "_HTTP._TCP.web.NS0.svc.cluster.local",
        "http.tcp.web.ns0.svc.cluster.local",
        "_._tcp.web.ns0.svc.cluster.local",
    ]
    types = ("A", "AAAA", "SRV", "TXT", "HTTPS", "MX", "PTR", "ANY", "NS", "CNAME", "TYPE99", "AXFR")
    taken = 0
    for resolvers in chains:
        for recursive, more in ((False, False), (True, True)):  # the second: prometheus, log, loadbalance, acl
            short = factory(resolvers, recursive, True, more, more, more, Gate() if more else None)
            general = factory(resolvers, recursive, False, more, more, more, Gate() if more else None)
            for name in names:
                for qtype in types:
                    for edns in (None, 0):
                        q = dns.message.make_query(name, qtype, use_edns=edns, want_dnssec=edns is not None)
                        data = q.to_wire()
                        taken += shortpath.answer(factory(resolvers, recursive, True), data, ADDRESS, "udp") is not None
                        assert answered(short, data, "udp") == answered(general, data, "udp"), (name, qtype)
            assert entries(short) == entries(general)
            assert accounted(short) == accounted(general)
            assert short.blocks[0].rotation == general.blocks[0].rotation
    assert taken > 2000  # most of these are the short path's to answer


BASE_QUERIES = [
    dns.message.make_query(name, qtype, use_edns=edns, want_dnssec=edns is not None).to_wire()
    for name in ("web.ns0.svc.cluster.local", "_http._tcp.web.ns0.svc.cluster.local", "nope.ns0.svc.cluster.local")
    for qtype in ("A", "SRV", "TXT")
    for edns in (None, 0)
]


RICH = rich_store()


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(BASE_QUERIES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
    st.integers(0, 200),
    st.binary(max_size=6),
)
def test_damaged_queries_answer_as_the_general_path(query, changes, cut, tail):
    """A query with octets changed, cut short or trailing bytes: the same answer (FORMERR, drop, ...) both ways."""
    data = bytearray(query)
    for at, value in changes:
        if at < len(data):
            data[at] = value
    data = bytes(data[: max(cut, 12)]) + tail
    resolvers = [
        KubernetesResolver(KubernetesOptions(zones=("cluster.local.",), fallthrough=Fallthrough((".",))), RICH),
        KubernetesResolver(KubernetesOptions(zones=("cluster.local.",)), RICH),
    ]
    short = factory(resolvers, False, True, True, True, True)
    general = factory(resolvers, False, False, True, True, True)
    for proto in ("udp", "tcp"):
        assert answered(short, data, proto) == answered(general, data, proto)
    assert entries(short) == entries(general)
    assert accounted(short) == accounted(general)
