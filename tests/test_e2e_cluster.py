"""End to end against a fake API server on loopback: live changes, outages, restarts.

The real server (KubernetaiService on the real reactor, real UDP/TCP
sockets) reads a fake cluster over real HTTP; queries go out with dnspython.
"""

from __future__ import annotations

import time

import dns.message
import dns.query
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from kubernetai.build import KubernetaiService, load_text

from .fakeapi import FakeCluster, listen, namespace, service, slice_

pytestmark = pytest.mark.e2e  # real sockets on loopback


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> defer.Deferred:
    q = dns.message.make_query(name, rdtype)
    fn = dns.query.tcp if tcp else dns.query.udp
    return threads.deferToThread(fn, q, "127.0.0.1", port=port, timeout=2)


@defer.inlineCallbacks
def eventually(port, name, predicate, within: float, rdtype="A"):
    """Query until ``predicate(answer)``; returns (answer, seconds taken)."""
    start = time.monotonic()
    while True:
        r = yield ask(port, name, rdtype)
        if predicate(r):
            return r, time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{name}: still {dns.rcode.to_text(r.rcode())} {r.answer} after {within}s")
        yield task.deferLater(reactor, 0.05, lambda: None)


def addr(r):
    return [rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address")]


@pytest.fixture
def cluster():
    c = FakeCluster()
    c.load([namespace("default"), service("web", ip="10.96.0.10"), slice_("web", ["10.1.0.1"])])
    return c


@pytest.fixture
def running(cluster):
    """Fake API on loopback plus the DNS server reading it; yields (port, api port holder)."""
    holder = {"port": listen(cluster)}
    api_port = holder["port"].getHost().port
    text = f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint http://127.0.0.1:{api_port}
    }}
}}"""
    plan = load_text(text, 53, reactor)
    svc = KubernetaiService(plan, reactor)
    svc.startService()
    ((_, dns_port),) = svc.addresses()
    holder.update(dns_port=dns_port, api_port=api_port, service=svc, plan=plan)
    yield holder
    pytest_twisted.blockon(svc.stopService())
    pytest_twisted.blockon(defer.maybeDeferred(holder["port"].stopListening))
    cluster.drop_watches()


@pytest_twisted.inlineCallbacks
def test_live_changes_and_an_api_outage_with_compaction(cluster, running):
    port = running["dns_port"]
    r = yield ask(port, "web.default.svc.cluster.local")
    assert r.rcode() == 0 and addr(r) == ["10.96.0.10"]
    r = yield ask(port, "web.default.svc.cluster.local", tcp=True)
    assert addr(r) == ["10.96.0.10"]

    # A Service created after start-up resolves within a second.
    cluster.add(service("late", ip="10.96.0.20"))
    _, took = yield eventually(port, "late.default.svc.cluster.local", lambda r: addr(r) == ["10.96.0.20"], within=1.0)
    assert took < 1.0

    # One deleted stops resolving.
    cluster.delete("Service", "default", "web")
    yield eventually(port, "web.default.svc.cluster.local", lambda r: r.rcode() == dns.rcode.NXDOMAIN, within=1.0)

    # The API server goes away: connections closed at once for a while.
    running["port"].factory.down = True
    cluster.drop_watches()
    for _ in range(10):  # names keep resolving throughout, from the last good data
        r = yield ask(port, "late.default.svc.cluster.local")
        assert addr(r) == ["10.96.0.20"]
        yield task.deferLater(reactor, 0.1, lambda: None)

    # While it is down, the cluster changes and its history is compacted: a restart → 410.
    cluster.objects["Service"].pop(("default", "late"))
    cluster.add(service("after", ip="10.96.0.30"))
    cluster.compact()
    running["port"].factory.down = False

    r = yield ask(port, "late.default.svc.cluster.local")
    assert addr(r) == ["10.96.0.20"]  # still served until the relist replaces it
    yield eventually(port, "after.default.svc.cluster.local", lambda r: addr(r) == ["10.96.0.30"], within=10.0)
    yield eventually(port, "late.default.svc.cluster.local", lambda r: r.rcode() == dns.rcode.NXDOMAIN, within=2.0)
    (status,) = running["plan"].server.status.values()
    for _ in range(300):  # every watch reconnects (each on its own backoff)
        if status()["connected"]:
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    assert status()["connected"] and status()["synced"]
    assert status()["objects"]["Service"] == 1


@pytest_twisted.inlineCallbacks
def test_unsynced_cluster_answers_servfail_after_startup_timeout():
    text = """.:0 {
    bind 127.0.0.1
    kubernetai cluster.local {
        endpoint http://127.0.0.1:1
        startup_timeout 0.3s
    }
}"""
    svc = KubernetaiService(load_text(text, 53, reactor), reactor)
    svc.startService()
    try:
        ((_, port),) = svc.addresses()
        start = time.monotonic()
        r = yield ask(port, "web.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - start < 1.5  # held at most about startup_timeout
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_first_query_waits_for_the_first_sync(cluster):
    cluster.hang_next = 0
    api = listen(cluster)
    text = f""".:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        endpoint http://127.0.0.1:{api.getHost().port}
        startup_timeout 5s
    }}
}}"""
    svc = KubernetaiService(load_text(text, 53, reactor), reactor)
    svc.startService()  # the query below is sent before the first list can have finished
    try:
        ((_, port),) = svc.addresses()
        r = yield ask(port, "web.default.svc.cluster.local")
        assert addr(r) == ["10.96.0.10"]
    finally:
        yield svc.stopService()
        yield api.stopListening()
        cluster.drop_watches()
