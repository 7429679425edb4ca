"""Many clusters in one server, end to end: fake API servers on loopback, the real server, dnspython."""

from __future__ import annotations

import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.names import dns as tdns

from kubernetai.build import KubernetaiService, load_text

from .fakeapi import FakeCluster, listen, namespace, pod, service, slice_

pytestmark = pytest.mark.e2e  # real sockets on loopback


class Clusters:
    """Named fake clusters, each behind its own API server on loopback."""

    def __init__(self):
        self.clusters: dict[str, FakeCluster] = {}
        self.ports: dict[str, int] = {}
        self.listeners: dict[str, object] = {}

    def add(self, name: str, objects: list) -> FakeCluster:
        c = FakeCluster()
        c.load(objects)
        self.clusters[name] = c
        self.listeners[name] = listen(c)
        self.ports[name] = self.listeners[name].getHost().port
        return c

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self, name: str) -> None:
        """The API goes away; its port stays held (connections closed at once) till ``close``."""
        self.listeners[name].factory.down = True
        self.clusters[name].drop_watches()

    @defer.inlineCallbacks
    def close(self):
        for name, listener in list(self.listeners.items()):
            self.stop(name)
            yield listener.stopListening()


@pytest.fixture
def clusters():
    c = Clusters()
    yield c
    pytest_twisted.blockon(c.close())


@defer.inlineCallbacks
def serve(text: str):
    svc = KubernetaiService(load_text(text, 53, reactor), reactor)
    svc.startService()
    # wait for the start-up gate to open (first sync or startup_timeout)
    yield threads.deferToThread(lambda: None)
    return svc


def port_of(svc) -> int:
    ((_, port),) = svc.addresses()
    return port


def ask(port, name, rdtype="A", tcp=False, source=None):
    q = dns.message.make_query(name, rdtype)
    kw = {"source": source} if source else {}
    fn = dns.query.tcp if tcp else dns.query.udp
    return threads.deferToThread(fn, q, "127.0.0.1", port=port, timeout=5, **kw)


def addrs(r):
    return sorted(rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address"))


# ------------------------------------------------------------------ the kubernetai README's examples


@pytest_twisted.inlineCallbacks
def test_readme_three_clusters_three_zones(clusters):
    for name, ip in (("cluster", "10.96.0.1"), ("assemblage", "10.97.0.1"), ("conglomeration", "10.98.0.1")):
        clusters.add(name, [namespace("default"), service("svc", ip=ip)])
    svc = yield serve(f"""\
.:0 {{
    bind 127.0.0.1
    errors
    log
    kubernetai cluster.local {{
      endpoint {clusters.url("cluster")}
    }}
    kubernetai assemblage.local {{
      endpoint {clusters.url("assemblage")}
    }}
    kubernetai conglomeration.local {{
      endpoint {clusters.url("conglomeration")}
    }}
}}""")
    try:
        port = port_of(svc)
        for zone, ip in (
            ("cluster.local", "10.96.0.1"),
            ("assemblage.local", "10.97.0.1"),
            ("conglomeration.local", "10.98.0.1"),
        ):
            r = yield ask(port, f"svc.default.svc.{zone}")
            assert addrs(r) == [ip]
            r = yield ask(port, f"nope.default.svc.{zone}")
            assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].name.to_text() == f"{zone}."
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_readme_local_and_remote_cluster_same_zone(clusters):
    # Local: a ClusterIP with ready endpoints, one without, one only local.
    clusters.add(
        "local",
        [
            namespace("default"),
            service("web", ip="10.96.0.10"),
            slice_("web", ["10.244.0.10"]),
            service("api", ip="10.96.0.20"),
            slice_("api", ["10.244.0.20"], ready=False),
            service("onlylocal", ip="10.96.0.30"),
            slice_("onlylocal", ["10.244.0.30"]),
        ],
    )
    # Remote: headless Services, as the README requires.
    clusters.add(
        "remote",
        [
            namespace("default"),
            service("web", ip=None),
            slice_("web", ["10.245.0.10"]),
            service("api", ip=None),
            slice_("api", ["10.245.0.20", "10.245.0.21"]),
            service("onlyremote", ip=None),
            slice_("onlyremote", ["10.245.0.40"]),
        ],
    )
    svc = yield serve(
        f"""\
. {{
    bind 127.0.0.1
    errors
    log
    kubernetai cluster.local {{
      endpoint {clusters.url("local")}
      ignore empty_service
      fallthrough
    }}
    kubernetai cluster.local {{
      endpoint {clusters.url("remote")}
    }}
}}""".replace(". {", ".:0 {", 1)
    )
    try:
        port = port_of(svc)
        assert addrs((yield ask(port, "web.default.svc.cluster.local"))) == ["10.96.0.10"]  # local first
        assert addrs((yield ask(port, "api.default.svc.cluster.local"))) == [
            "10.245.0.20",
            "10.245.0.21",
        ]  # empty locally
        assert addrs((yield ask(port, "onlyremote.default.svc.cluster.local", tcp=True))) == ["10.245.0.40"]
        assert addrs((yield ask(port, "onlylocal.default.svc.cluster.local"))) == ["10.96.0.30"]
        r = yield ask(port, "none.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.NXDOMAIN  # the last stanza has no fallthrough: final, with SOA
        assert r.authority[0].rdtype == 6
        # NODATA never falls through: web exists locally, AAAA is NODATA from the first stanza.
        r = yield ask(port, "web.default.svc.cluster.local", "AAAA")
        assert r.rcode() == 0 and not r.answer
        # The local cluster's Service gets its endpoints back: it answers again.
        clusters.clusters["local"].add(slice_("api", ["10.244.0.20"], ready=True))
        for _ in range(40):
            r = yield ask(port, "api.default.svc.cluster.local")
            if addrs(r) == ["10.96.0.20"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert addrs(r) == ["10.96.0.20"]
    finally:
        yield svc.stopService()


# ------------------------------------------------------------------ fallthrough to forward, dead clusters


@pytest.fixture
def upstream(dns_upstream):
    return dns_upstream(
        "cluster.local.", {("elsewhere.default.svc.cluster.local", tdns.A): [tdns.Record_A("192.0.2.99", 5)]}
    )


@pytest_twisted.inlineCallbacks
def test_fallthrough_chain_ends_in_forward(clusters, upstream):
    clusters.add("a", [namespace("default"), service("one", ip="10.96.0.1")])
    clusters.add("b", [namespace("default"), service("two", ip="10.97.0.2")])
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint {clusters.url("a")}
        fallthrough
    }}
    kubernetai cluster.local {{
        endpoint {clusters.url("b")}
        fallthrough
    }}
    forward . 127.0.0.1:{upstream}
}}""")
    try:
        port = port_of(svc)
        assert addrs((yield ask(port, "one.default.svc.cluster.local"))) == ["10.96.0.1"]
        assert addrs((yield ask(port, "two.default.svc.cluster.local"))) == ["10.97.0.2"]
        assert addrs((yield ask(port, "elsewhere.default.svc.cluster.local"))) == ["192.0.2.99"]
        r = yield ask(port, "missing.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.NXDOMAIN  # the upstream's own answer
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_a_dead_cluster_does_not_take_the_others_down(clusters, dead_port):
    clusters.add("b", [namespace("default"), service("two", ip="10.97.0.2")])
    dead = f"http://127.0.0.1:{dead_port}"  # nothing listens: refused from the start
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    kubernetai dead.local {{
        endpoint {dead}
        startup_timeout 0.5s
    }}
    kubernetai cluster.local {{
        endpoint {dead}
        startup_timeout 0.5s
        fallthrough
    }}
    kubernetai cluster.local other.local {{
        endpoint {clusters.url("b")}
    }}
}}""")
    try:
        port = port_of(svc)
        r = yield ask(port, "two.default.svc.cluster.local")
        assert addrs(r) == ["10.97.0.2"]  # the dead stanza with fallthrough passed it on
        r = yield ask(port, "x.default.svc.dead.local")
        assert r.rcode() == dns.rcode.SERVFAIL  # no data and no fallthrough: SERVFAIL, not a false NXDOMAIN
        assert addrs((yield ask(port, "two.default.svc.other.local"))) == ["10.97.0.2"]
        # Mid-run, cluster b's API goes away: it keeps answering from its data.
        clusters.stop("b")
        yield task.deferLater(reactor, 0.3, lambda: None)
        assert addrs((yield ask(port, "two.default.svc.cluster.local", tcp=True))) == ["10.97.0.2"]
        status = {name: f() for name, f in svc.plan.server.status.items()}
        assert [s["synced"] for s in status.values()] == [False, False, True]
        # Default names: first zone @ API host (issue 13), distinct.
        assert list(status) == [
            f"dead.local@127.0.0.1:{dead_port}",
            f"cluster.local@127.0.0.1:{dead_port}",
            f"cluster.local@127.0.0.1:{clusters.ports['b']}",
        ]
    finally:
        yield svc.stopService()


# ------------------------------------------------------------------ no shared per-query state


@pytest_twisted.inlineCallbacks
def test_concurrent_queries_across_stanzas_all_answered_right(clusters):
    n = 40
    clusters.add("a", [namespace("default")] + [service(f"a{i}", ip=f"10.96.1.{i}") for i in range(n)])
    clusters.add("b", [namespace("default")] + [service(f"b{i}", ip=f"10.97.1.{i}") for i in range(n)])
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint {clusters.url("a")}
        fallthrough
    }}
    kubernetai cluster.local {{
        endpoint {clusters.url("b")}
    }}
}}""")
    try:
        port = port_of(svc)
        jobs = (
            [(f"a{i}", f"10.96.1.{i}") for i in range(n)]
            + [(f"b{i}", f"10.97.1.{i}") for i in range(n)]
            + [(f"c{i}", None) for i in range(n)]
        )
        jobs = jobs * 4  # 480 queries, 16 at a time, interleaving both stanzas and misses

        def run():
            def one(job):
                name, want = job
                r = dns.query.udp(
                    dns.message.make_query(f"{name}.default.svc.cluster.local", "A"), "127.0.0.1", port=port, timeout=5
                )
                got = addrs(r)
                return (
                    (name, dns.rcode.to_text(r.rcode()), got)
                    if got != ([want] if want else []) or (want is None and r.rcode() != 3)
                    else None
                )

            with ThreadPoolExecutor(16) as pool:
                return [x for x in pool.map(one, jobs) if x is not None]

        wrong = yield threads.deferToThread(run)
        assert wrong == []
    finally:
        yield svc.stopService()


# ------------------------------------------------------------------ autopath across clusters


@pytest_twisted.inlineCallbacks
def test_autopath_with_clients_from_different_clusters(clusters):
    # Client 127.0.0.7 is a pod of team-a known only to cluster A; 127.0.0.8 of team-b only to B.
    clusters.add(
        "a", [namespace("team-a"), pod("client-a", "127.0.0.7", "team-a"), service("api", "team-a", ip="10.96.0.5")]
    )
    clusters.add(
        "b",
        [
            namespace("team-a"),
            namespace("team-b"),
            pod("client-b", "127.0.0.8", "team-b"),
            service("db", "team-b", ip="10.97.0.6"),
            service("cache", "team-a", ip="10.97.0.7"),
        ],
    )
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    autopath @kubernetai
    kubernetai a.local {{
        endpoint {clusters.url("a")}
        pods verified
    }}
    kubernetai b.local {{
        endpoint {clusters.url("b")}
        pods verified
    }}
}}""")
    try:
        port = port_of(svc)
        # From A's client: the search path is team-a.svc.b.local, svc.b.local, b.local,
        # team-a.svc.a.local, ... (later stanzas first); B does not know the client at all.
        r = yield ask(port, "api.team-a.svc.b.local", source="127.0.0.7")
        got = sorted(rrset.to_text() for rrset in r.answer)
        assert got == [
            "api.team-a.svc.a.local. 5 IN A 10.96.0.5",
            "api.team-a.svc.b.local. 5 IN CNAME api.team-a.svc.a.local.",
        ]
        r = yield ask(port, "cache.team-a.svc.b.local", source="127.0.0.7")  # first search name answers directly
        assert addrs(r) == ["10.97.0.7"] and len(r.answer) == 1
        # From B's client (team-b): db.team-b.svc.b.local directly; the short name "db" expanded by the client
        # as db.team-b.svc.b.local too.  A name nobody has stays NXDOMAIN.
        r = yield ask(port, "db.team-b.svc.b.local", source="127.0.0.8")
        assert addrs(r) == ["10.97.0.6"]
        r = yield ask(port, "nothing.team-b.svc.b.local", source="127.0.0.8")
        assert r.rcode() == dns.rcode.NXDOMAIN
        # A client no cluster knows gets no autopath: plain answers.
        r = yield ask(port, "api.team-a.svc.b.local", source="127.0.0.9")
        assert r.rcode() == dns.rcode.NXDOMAIN
    finally:
        yield svc.stopService()


# ------------------------------------------------------------------ zone transfer: content and ACL


def axfr(port: int, zone: str, source: str = "127.0.0.1", udp: bool = False) -> tuple[str, list[str]]:
    q = dns.message.make_query(zone, "AXFR")
    if udp:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=5, source=source)
        return dns.rcode.to_text(r.rcode()), []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        wire = q.to_wire()
        s.sendall(struct.pack("!H", len(wire)) + wire)
        records: list[str] = []
        while True:
            n = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
            m = dns.message.from_wire(s.recv(n, socket.MSG_WAITALL), xfr=True)
            if m.rcode() != 0:
                return dns.rcode.to_text(m.rcode()), []
            records += [
                f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}" for rrset in m.answer for rd in rrset
            ]
            if sum(1 for r in records if " SOA " in r) >= 2:
                return "NOERROR", records


@pytest_twisted.inlineCallbacks
def test_axfr_content_and_acl(clusters):
    clusters.add("a", [namespace("default"), service("one", ip="10.96.0.1", ports=[("http", "TCP", 80)])])
    clusters.add("b", [namespace("default"), service("two", ip="10.97.0.2")])
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    transfer {{
        to 127.0.0.1 127.0.0.2/32
    }}
    kubernetai a.local {{
        endpoint {clusters.url("a")}
    }}
    kubernetai b.local {{
        endpoint {clusters.url("b")}
    }}
}}""")
    try:
        port = port_of(svc)
        rcode, records = yield threads.deferToThread(axfr, port, "a.local")
        assert rcode == "NOERROR"
        assert records[0].startswith("a.local. SOA") and records[-1].startswith("a.local. SOA")
        assert "one.default.svc.a.local. A 10.96.0.1" in records
        assert "_http._tcp.one.default.svc.a.local. SRV 0 100 80 one.default.svc.a.local." in records
        assert not any("two." in r for r in records)  # only that stanza's zone
        rcode, records = yield threads.deferToThread(axfr, port, "b.local", "127.0.0.2")
        assert rcode == "NOERROR" and "two.default.svc.b.local. A 10.97.0.2" in records
        rcode, _ = yield threads.deferToThread(axfr, port, "a.local", "127.0.0.3")  # not in `to`
        assert rcode == "REFUSED"
        rcode, _ = yield threads.deferToThread(axfr, port, "a.local", "127.0.0.1", True)  # AXFR over UDP
        assert rcode == "REFUSED"
        rcode, _ = yield threads.deferToThread(axfr, port, "example.com")  # nobody's zone
        assert rcode == "SERVFAIL"
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_endpoint_failover_and_back_to_the_first(clusters):
    """Issue 12, item 3: `endpoint A B` uses B while A refuses, and A again once it recovers."""
    objs = [namespace("default"), service("web", ip="10.96.0.1")]
    clusters.add("a", objs)
    clusters.add("b", objs)
    clusters.stop("a")  # connections to A close at once
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint {clusters.url("a")} {clusters.url("b")}
        startup_timeout 5s
    }}
}}""")
    try:
        ((name, status),) = svc.plan.server.status.items()
        (stanza,) = svc.plan.server.startup
        stanza.connection.primary_retry = 1.0
        port = port_of(svc)
        first = yield ask(port, "web.default.svc.cluster.local")
        assert addrs(first) == ["10.96.0.1"], {k: status()[k] for k in ("synced", "last_error", "resources")}
        assert status()["endpoint"] == clusters.url("b")
        clusters.listeners["a"].factory.down = False  # A is back
        for _ in range(100):  # within ~primary_retry plus a reconnect: bounded wait
            if status()["endpoint"] == clusters.url("a") and status()["connected"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert status()["endpoint"] == clusters.url("a") and status()["connected"]
        clusters.clusters["a"].add(service("new", ip="10.96.0.9"))  # only A has it: answers come from A
        for _ in range(40):
            r = yield ask(port, "new.default.svc.cluster.local")
            if addrs(r) == ["10.96.0.9"]:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert addrs(r) == ["10.96.0.9"]
    finally:
        yield svc.stopService()
