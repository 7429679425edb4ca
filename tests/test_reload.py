"""Issue 14: reloading the Corefile without losing a query, and signals that never kill.

In process (the real KubernetaiService on the real reactor, queries from a
thread with dnspython) for the 20 reloads under load; a real twistd for the
signals and CoreDNS's stock Corefile.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from kubernetai.build import KubernetaiService, load
from kubernetai.reload import Reloader

from .conftest import wait_for_log
from .fakeapi import FakeCluster, listen, namespace, service, slice_
from .twistd import Server

pytestmark = pytest.mark.e2e

CLUSTER_A = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: default}}
- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: default},
   spec: {type: ClusterIP, clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}}
"""
CLUSTER_B = CLUSTER_A.replace("web", "db").replace("10.96.0.10", "10.97.0.20")

BLOCK = """\
.:0 {{
    bind 127.0.0.1
    kubernetai cluster.local {{
        manifests a.yaml
        ttl {ttl}
        fallthrough
    }}
{extra_stanza}}}
{extra_block}"""
STANZA_B = "    kubernetai other.local {\n        manifests b.yaml\n    }\n"
HOSTS_BLOCK = "example.org:0 {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 www.example.org\n    }\n}\n"


def corefile(ttl=5, b=False, hosts=False) -> str:
    return BLOCK.format(ttl=ttl, extra_stanza=STANZA_B if b else "", extra_block=HOSTS_BLOCK if hosts else "")


class Prober(threading.Thread):
    """Queries over UDP and TCP without pause; records every answer that is missing or wrong."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.bad: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens
        tcp = False
        while not self.stop.is_set() and time.monotonic() < deadline:
            q = dns.message.make_query("web.default.svc.cluster.local", "A")
            try:
                fn = dns.query.tcp if tcp else dns.query.udp
                r = fn(q, "127.0.0.1", port=self.port, timeout=2)
                addresses = [rr.address for rrset in r.answer for rr in rrset]
                if r.rcode() != dns.rcode.NOERROR or addresses != ["10.96.0.10"]:
                    self.bad.append(f"{'tcp' if tcp else 'udp'}: {dns.rcode.to_text(r.rcode())} {addresses}")
            except (dns.exception.Timeout, OSError) as e:
                self.bad.append(f"{'tcp' if tcp else 'udp'}: no answer ({e!r})")
            self.sent += 1
            tcp = not tcp


@pytest_twisted.inlineCallbacks
def test_twenty_reloads_under_load_lose_no_query(tmp_path):
    (tmp_path / "a.yaml").write_text(CLUSTER_A)
    (tmp_path / "b.yaml").write_text(CLUSTER_B)
    path = tmp_path / "Corefile"
    path.write_text(corefile())
    svc = KubernetaiService(
        load(str(path), 53, reactor), reactor, loader=lambda previous: load(str(path), 53, reactor, previous=previous)
    )
    reloader = Reloader(svc, str(path))
    reloader.setServiceParent(svc)
    svc.startService()
    try:
        ((_, port),) = svc.addresses()
        for _ in range(100):
            if all(c.synced for c in svc.plan.server.clusters):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        first = svc.plan.server.clusters[0]
        prober = Prober(port)
        prober.start()
        steps = [
            dict(b=True),  # a stanza added
            dict(b=True, hosts=True),  # a block added
            dict(ttl=30, b=True, hosts=True),  # a TTL changed: that stanza is new
            None,  # a bad Corefile: nothing changes
            dict(ttl=30, hosts=True),  # a stanza removed
            dict(ttl=30),  # a block removed
            dict(),
        ]
        expected_ttl = 5
        for i in range(20):
            step = steps[i % len(steps)]
            if step is None:
                path.write_text(corefile().replace("bind 127.0.0.1", "bind 127.0.0.1\n    nonsense"))
            else:
                path.write_text(corefile(**step))
            before = svc.plan.server.clusters[0]
            yield reloader.reload(f"test step {i}")
            if step is None:
                assert svc.plan.server.clusters[0] is before  # the bad Corefile changed nothing
                continue
            expected_ttl = step.get("ttl", 5)
            r = yield _ask(port, "web.default.svc.cluster.local")
            assert r.answer[0].ttl == expected_ttl, (i, step)
            b = yield _ask(port, "db.default.svc.other.local")
            assert (b.rcode() == dns.rcode.NOERROR) == bool(step.get("b")), (i, step)
            if step.get("b") and i % len(steps) == 1:
                assert svc.plan.server.clusters[0] is before, i  # adding a block kept the unchanged stanza
        yield task.deferLater(reactor, 0.2, lambda: None)
        prober.stop.set()
        yield threads.deferToThread(prober.join, 10)
        assert reloader.reloads == 17 and reloader.failed == 3
        assert prober.sent > 100 and prober.bad == [], prober.bad[:5]
        assert not first.running and first not in svc.plan.server.clusters  # replaced (TTL), and stopped
    finally:
        yield svc.stopService()


# ------------------------------------------------------------------ a real twistd: CoreDNS's stock Corefile


STOCK = """\
.:0 {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:0 {{
       lameduck 1s
    }}
    ready 127.0.0.1:0
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       endpoint {endpoint}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl {ttl}
    }}
    prometheus 127.0.0.1:0
    forward . 127.0.0.1:{upstream} {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"""


@pytest_twisted.inlineCallbacks
def test_corednss_stock_corefile_runs_forwards_through_cache_and_reloads_on_sigusr1(tmp_path, dns_upstream):
    from twisted.names import dns as tdns

    cluster = FakeCluster()
    cluster.load([namespace("default"), service("web", ip="10.96.0.10"), slice_("web", ["10.1.0.1"])])
    api = listen(cluster)
    upstream = dns_upstream("example.org.", {("www.example.org", tdns.A): [tdns.Record_A("192.0.2.1", 300)]})
    path = tmp_path / "Corefile"
    endpoint = f"http://127.0.0.1:{api.getHost().port}"
    path.write_text(STOCK.format(endpoint=endpoint, upstream=upstream, ttl=30))
    check = yield threads.deferToThread(_check, path)
    assert check.endswith("Corefile OK\n"), check
    server = yield threads.deferToThread(Server, path)
    try:
        r = yield _ask(server.port, "web.default.svc.cluster.local")
        assert r.answer[0].ttl == 30 and r.answer[0][0].address == "10.96.0.10"
        first = yield _ask(server.port, "www.example.org")
        assert first.answer[0][0].address == "192.0.2.1"
        yield task.deferLater(reactor, 1.1, lambda: None)
        again = yield _ask(server.port, "www.example.org")
        assert again.answer[0].ttl < 30  # from cache, counting down (cache 30 caps the 300)
        path.write_text(STOCK.format(endpoint=endpoint, upstream=upstream, ttl=7))
        server.proc.send_signal(signal.SIGUSR1)
        yield threads.deferToThread(wait_for_log, server.out, r"reloaded \(", server.proc, 10)
        r = yield _ask(server.port, "web.default.svc.cluster.local")
        assert r.answer[0].ttl == 7
        for sig in (signal.SIGHUP, signal.SIGUSR2):  # reload, and ignored: neither kills
            server.proc.send_signal(sig)
        yield threads.deferToThread(wait_for_log, server.out, r"SIGUSR2 received and ignored", server.proc, 10)
        yield threads.deferToThread(wait_for_log, server.out, r"reloading the Corefile \(SIGHUP\)", server.proc, 10)
        assert server.proc.poll() is None
        r = yield _ask(server.port, "web.default.svc.cluster.local")
        assert r.answer[0][0].address == "10.96.0.10"
    finally:
        code = yield threads.deferToThread(server.stop)
        yield api.stopListening()
    assert code in (0, -signal.SIGTERM)  # twistd re-raises the SIGTERM it stopped on
    assert "Traceback" not in server.log()


def _check(path: Path) -> str:
    import subprocess

    from .twistd import env, twistd

    out = subprocess.run(
        twistd("--config", str(path), "--check", cwd=path.parent), cwd=path.parent, env=env(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    return out.stdout + out.stderr


def _ask(port: int, name: str) -> defer.Deferred:
    return threads.deferToThread(dns.query.udp, dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3)


def _loop_and_forward(svc):
    from kubernetai.plugins.forward import ForwardResolver
    from kubernetai.plugins.loop import LoopResolver

    resolvers = svc.plan.blocks[0].block.resolver.resolvers
    (loop,) = [r for r in resolvers if isinstance(r, LoopResolver)]
    (forward,) = [r for r in resolvers if isinstance(r, ForwardResolver)]
    return loop, forward


@pytest_twisted.inlineCallbacks
def test_loop_detects_a_forwarder_that_sends_queries_back_and_exits():
    from kubernetai.build import load_text
    from kubernetai.plugins.forward import _QuietClient

    svc = KubernetaiService(load_text(".:0 {\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:9\n}", 53, reactor), reactor)
    loop, forward = _loop_and_forward(svc)
    exits: list[int] = []
    loop.exit = exits.append
    svc.startService()
    try:
        ((_, port),) = svc.addresses()
        forward._clients = [_QuietClient(servers=[("127.0.0.1", port)], reactor=reactor)]  # forward to ourselves
        for _ in range(250):
            if exits:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        assert exits == [1] and loop.seen == 3
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_loop_stands_down_once_its_probe_is_answered(dns_upstream):
    from kubernetai.build import load_text

    upstream = dns_upstream("example.org.", {})
    text = f".:0 {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{upstream}\n}}"
    svc = KubernetaiService(load_text(text, 53, reactor), reactor)
    loop, _ = _loop_and_forward(svc)
    loop.exit = lambda code: pytest.fail("no loop here")
    svc.startService()
    try:
        for _ in range(250):
            if loop.done:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        assert loop.done and loop.seen == 1 and loop.probes == 1
    finally:
        yield svc.stopService()
