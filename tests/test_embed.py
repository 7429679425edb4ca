"""kubernetai.cluster.connect(): one cluster as a resolver and service in a stock Twisted program."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.names import authority, cache, hosts, resolve, server
from twisted.names import dns as tdns
from twisted.names.error import DomainError
from zope.interface.verify import verifyObject

from kubernetai.cluster import ClusterConfigError, KubernetesCluster, connect
from kubernetai.listen import listen_udp_tcp

from .fakeapi import FakeCluster, listen, namespace, service, slice_

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "etc" / "examples" / "embed.py"

MANIFEST = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec: {type: ClusterIP, clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{port: 80, protocol: TCP}]}
"""

ZONE = """\
zone = [
    SOA("example.test", mname="ns.example.test", rname="hostmaster.example.test", serial=1,
        refresh=3600, retry=600, expire=86400, minimum=60),
    A("www.example.test", "192.0.2.80"),
]
"""


@pytest.fixture
def manifest(tmp_path) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(MANIFEST)
    return str(path)


# ------------------------------------------------------------------ construction


def test_it_is_a_resolver_and_a_service(manifest):
    from twisted.application.service import IService
    from twisted.internet.interfaces import IResolver

    c = connect(["cluster.local"], manifests=[manifest], ttl=30, fallthrough=True, local_ips=["192.0.2.53"])
    assert isinstance(c, KubernetesCluster)
    assert verifyObject(IResolver, c) and verifyObject(IService, c)
    assert c.opts.ttl == 30 and c.opts.fallthrough.zones == (".",) and c.zones == ("cluster.local.",)


def test_options_as_keywords_or_corefile_text_are_the_same(manifest):
    a = connect(["cluster.local", "10.96.0.0/16"], manifests=[manifest], pods="insecure", namespaces=["a", "b"])
    b = connect(["cluster.local", "10.96.0.0/16"], manifests=[manifest], options="pods insecure\nnamespaces a b")
    assert a.opts == b.opts
    assert a.zones == ("cluster.local.", "96.10.in-addr.arpa.")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ttl": 99999}, "ttl must be in range [0, 3600]"),
        ({"pods": "sometimes"}, "wrong value for pods: sometimes"),
        ({"colour": "blue"}, "unknown property 'colour'"),
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "/nonexistent/kubeconfig"),
        ({"endpoint": "http://127.0.0.1:1", "manifests": ["x.yaml"]}, "manifests cannot be combined with endpoint"),
        ({"context": "prod"}, "context needs kubeconfig"),
        ({"namespaces": ["a"], "namespace_labels": "team=x"}, "cannot both be set"),
        ({"options": "labels a==="}, "unable to parse label selector"),
        ({"zones": ["bad..zone"]}, "not a valid domain name"),
        ({"options": "fallthrough {"}, "options: a '{' is not closed"),
        ({"options": "ttl 5\n}\nkubernetai x {"}, "options: line 2: '}' without a '{' before it"),
    ],
)
def test_a_bad_setting_fails_at_construction_with_a_clear_message(kwargs, message):
    kwargs = dict(kwargs)
    zones = kwargs.pop("zones", ["cluster.local"])
    with pytest.raises(ClusterConfigError) as e:
        connect(zones, **kwargs)
    assert message in str(e.value)
    assert "<connect>" not in str(e.value)


def test_values_with_spaces_and_quotes_survive(tmp_path):
    d = tmp_path / 'dir with "quotes" and spaces'
    d.mkdir()
    (d / "c.yaml").write_text(MANIFEST)
    c = connect(["cluster.local"], manifests=[str(d / "c.yaml")])
    assert c.opts.manifests == (str(d / "c.yaml"),)


# ------------------------------------------------------------------ stock Twisted


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> defer.Deferred:
    q = dns.message.make_query(name, rdtype)
    fn = dns.query.tcp if tcp else dns.query.udp
    return threads.deferToThread(fn, q, "127.0.0.1", port=port, timeout=5)


def addresses(r: dns.message.Message) -> list[str]:
    return sorted(rr.address for rrset in r.answer for rr in rrset if hasattr(rr, "address"))


@pytest.fixture
def zone_file(tmp_path) -> authority.PySourceAuthority:
    path = tmp_path / "example.test.py"
    path.write_text(ZONE)
    return authority.PySourceAuthority(str(path))


@defer.inlineCallbacks
def stock_server(*authorities):
    """Twisted's own DNSServerFactory (not ours) on loopback; returns (port, listening ports)."""
    factory = server.DNSServerFactory(authorities=list(authorities), caches=[cache.CacheResolver()])
    ports = listen_udp_tcp(reactor, 0, lambda: tdns.DNSDatagramProtocol(factory), factory, "127.0.0.1")
    yield None
    return ports


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_stock_twisted_server_answers_a_snapshot_cluster_and_a_file_authority(manifest, zone_file):
    c = connect(["cluster.local"], manifests=[manifest], fallthrough=True, local_ips=["192.0.2.53"])
    c.startService()
    ports = None
    try:
        yield c.when_synced()
        ports = yield stock_server(c, zone_file)
        r = yield ask(ports.port, "web.default.svc.cluster.local")
        assert addresses(r) == ["10.96.0.10"]
        r = yield ask(ports.port, "www.example.test", tcp=True)
        assert addresses(r) == ["192.0.2.80"]
        r = yield ask(ports.port, "missing.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.NXDOMAIN
        r = yield ask(ports.port, "_http._tcp.web.default.svc.cluster.local", "SRV")
        assert r.rcode() == dns.rcode.NXDOMAIN  # unnamed port: no _port._proto name
    finally:
        if ports is not None:
            yield ports.stopListening()
        yield c.stopService()


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_stock_twisted_server_answers_a_cluster_from_the_api_and_follows_changes(zone_file):
    cluster = FakeCluster()
    cluster.load([namespace("default"), service("web", ip="10.96.0.10"), slice_("web", ["10.1.0.1"])])
    api = listen(cluster)
    c = connect(["cluster.local"], endpoint=f"http://127.0.0.1:{api.getHost().port}", fallthrough=True)
    c.startService()
    ports = None
    try:
        yield c.when_synced()
        ports = yield stock_server(c, zone_file)
        assert addresses((yield ask(ports.port, "web.default.svc.cluster.local"))) == ["10.96.0.10"]
        assert addresses((yield ask(ports.port, "www.example.test"))) == ["192.0.2.80"]
        cluster.add(service("late", ip="10.96.0.20"))
        for _ in range(40):  # bounded: 2 s
            r = yield ask(ports.port, "late.default.svc.cluster.local")
            if addresses(r):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert addresses(r) == ["10.96.0.20"]
    finally:
        if ports is not None:
            yield ports.stopListening()
        yield c.stopService()
        yield api.stopListening()
        cluster.drop_watches()
    assert not any(w.running for w in c)  # the watches are closed


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_client_side_resolver_chain_with_hosts_and_cache(manifest, tmp_path):
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("192.0.2.7 printer.lan\n")
    c = connect(["cluster.local"], manifests=[manifest], fallthrough=True)
    c.startService()
    try:
        yield c.when_synced()
        chain = resolve.ResolverChain([c, hosts.Resolver(str(hosts_file))])
        cached = cache.CacheResolver(reactor=task.Clock())
        answers, _, _ = yield chain.lookupAddress("web.default.svc.cluster.local")
        assert [a.payload.dottedQuad() for a in answers] == ["10.96.0.10"]
        answers, _, _ = yield chain.lookupAddress("printer.lan")  # not in our zone: the chain goes on
        assert [a.payload.dottedQuad() for a in answers] == ["192.0.2.7"]
        with pytest.raises(DomainError):  # a missing name with fallthrough: the chain goes on, hosts has none
            yield chain.lookupAddress("nothing.default.svc.cluster.local")
        query = tdns.Query(b"web.default.svc.cluster.local", tdns.A, tdns.IN)
        result = yield c.query(query)
        cached.cacheResult(query, result)
        again = yield cached.query(query)
        assert [a.payload.dottedQuad() for a in again[0]] == ["10.96.0.10"]
    finally:
        yield c.stopService()


# ------------------------------------------------------------------ the example, as documented


def example_env() -> dict[str, str]:
    """The example imports kubernetai from this checkout."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_example(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", *args],
        cwd=ROOT,
        env=example_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    out = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
        found = re.search(r"serving on 127\.0\.0\.1 port (\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    proc.wait(5)
    raise AssertionError(f"the example did not start: {out}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.e2e
def test_the_example_serves_the_demo_snapshot_cluster():
    proc, port = run_example("--manifests", "etc/demo/cluster-east.yaml")
    try:
        r = dns.query.udp(
            dns.message.make_query("web.default.svc.cluster.local", "A"), "127.0.0.1", port=port, timeout=5
        )
        assert addresses(r) == ["10.96.0.10"]
        r = dns.query.tcp(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port, timeout=5)
        assert addresses(r) == ["192.0.2.80"]
    finally:
        stop(proc)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_the_example_serves_a_cluster_from_the_fake_api():
    cluster = FakeCluster()
    cluster.load([namespace("default"), service("api", ip="10.96.0.42"), slice_("api", ["10.1.0.42"])])
    api = listen(cluster)
    try:
        proc, port = yield threads.deferToThread(run_example, "--endpoint", f"http://127.0.0.1:{api.getHost().port}")
        try:
            r = yield ask(port, "api.default.svc.cluster.local")
            assert addresses(r) == ["10.96.0.42"]
        finally:
            yield threads.deferToThread(stop, proc)
    finally:
        cluster.drop_watches()
        yield api.stopListening()


@pytest.mark.e2e
def test_the_example_refuses_a_bad_setting():
    p = subprocess.run(
        [sys.executable, str(EXAMPLE), "--port", "0", "--kubeconfig", "/nonexistent"],
        cwd=ROOT,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and "/nonexistent" in p.stderr and "Traceback" not in p.stderr
