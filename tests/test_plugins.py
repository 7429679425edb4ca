"""The built-in plugins: log, errors, hosts, forward, health, ready."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.names import dns as tdns
from twisted.python.failure import Failure

from kubernetai import outcome
from kubernetai.build import KubernetaiService, load_text
from kubernetai.plugins import errors as errors_plugin
from kubernetai.plugins import log as log_plugin
from kubernetai.plugins.http import HTTPListener
from kubernetai.request import QueryEvent
from kubernetai.server import KubeDNSServerFactory

from .conftest import held_port, result, success
from .test_server import RECORDS


def event(**kw) -> QueryEvent:
    base = dict(
        remote="127.0.0.1",
        port=52733,
        id=11754,
        qtype=tdns.A,
        qclass=tdns.IN,
        qname="svc.ns.svc.cluster.local.",
        proto="udp",
        size=29,
        do=False,
        bufsize=512,
        rcode=0,
        flags="qr,aa,rd",
        rsize=106,
        duration=0.0001,
        ancount=1,
    )
    base.update(kw)
    return QueryEvent(**base)


def captured(monkeypatch, module) -> list[dict]:
    events: list[dict] = []
    monkeypatch.setattr(module, "log", Logger(namespace="test", observer=events.append))
    return events


def texts(events):
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events]


def test_log_default_line_is_corednss(monkeypatch):
    events = captured(monkeypatch, log_plugin)
    p = load_text(". {\n log\n}", 53, task.Clock())
    p.blocks[0].block.observers[0](event())
    assert texts(events) == [
        '127.0.0.1:52733 - 11754 "A IN svc.ns.svc.cluster.local. udp 29 false 512" NOERROR qr,aa,rd 106 0.0001s'
    ]


def test_log_names_format_and_classes(monkeypatch):
    events = captured(monkeypatch, log_plugin)
    p = load_text(
        '. {\n log cluster.local other.org "{name} {rcode} {>opcode}" {\n  class denial error\n }\n}', 53, task.Clock()
    )
    rule = p.blocks[0].block.observers[0]
    rule(event())  # success: filtered out by class
    rule(event(rcode=3, ancount=0))  # denial: logged
    rule(event(ancount=0))  # NODATA is denial too
    rule(event(qname="x.example.com.", rcode=2))  # outside the names
    assert texts(events) == [
        "svc.ns.svc.cluster.local. NXDOMAIN QUERY",
        "svc.ns.svc.cluster.local. NOERROR QUERY",
    ]


def test_errors_logs_failures_and_consolidates(monkeypatch):
    events = captured(monkeypatch, errors_plugin)
    clock = task.Clock()
    p = load_text(". {\n errors {\n  consolidate 30s timeout\n }\n}", 53, clock)
    obs = p.blocks[0].block.observers[0]
    obs(event())  # no failure: nothing
    obs(event(rcode=2, failure=Failure(outcome.ServerFailure("not synced"))))
    for _ in range(3):
        obs(event(rcode=2, failure=Failure(outcome.ServerFailure("upstream timeout"))))
    assert texts(events) == ["plugin/errors: 11754 svc.ns.svc.cluster.local. A: not synced"]
    clock.advance(30)
    assert texts(events)[1] == "plugin/errors: 3 errors like 'timeout' occurred in last 30.0s"


# ------------------------------------------------------------------ hosts


def hosts_resolver(tmp_path, body: str, extra: str = ""):
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1 web.example.org web\n::1 web.example.org\n# comment\n10.0.0.2 db.example.org\n")
    clock = task.Clock()
    p = load_text(f". {{\n hosts {path} example.org 10.0.0.0/24 {{\n{body}\n }}\n{extra}}}", 53, clock)
    return p.blocks[0].block.resolver.resolvers[0], path, clock, p


def lookup(resolver, name, type=tdns.A):
    return result(resolver.query(tdns.Query(name, type)))


def test_hosts_a_aaaa_ptr(tmp_path):
    r, *_ = hosts_resolver(tmp_path, "  ttl 60")
    ans, auth, add = success(r.query(tdns.Query("Web.Example.org", tdns.A)))
    assert [(a.name.name, a.ttl, a.payload.dottedQuad()) for a in ans] == [(b"Web.Example.org", 60, "10.0.0.1")]
    ans, _, _ = success(r.query(tdns.Query("web.example.org", tdns.AAAA)))
    assert ans[0].payload._address == tdns.Record_AAAA("::1")._address
    ans, _, _ = success(r.query(tdns.Query("1.0.0.10.in-addr.arpa", tdns.PTR)))
    assert [a.payload.name.name for a in ans] == [b"web.example.org", b"web"]


def test_hosts_inline_entries_and_nodata_nxdomain(tmp_path):
    r, *_ = hosts_resolver(tmp_path, "  10.0.0.9 inline.example.org")
    assert success(r.query(tdns.Query("inline.example.org", tdns.A)))[0][0].payload.dottedQuad() == "10.0.0.9"
    ans, auth, _ = success(r.query(tdns.Query("db.example.org", tdns.MX)))
    assert ans == [] and auth[0].type == tdns.SOA
    f = lookup(r, "nope.example.org")
    assert isinstance(f.value, outcome.NXDomain) and f.value.authority[0].type == tdns.SOA
    assert isinstance(lookup(r, "x.other.org").value, outcome.NotMine)


def test_hosts_fallthrough_and_no_reverse(tmp_path):
    r, *_ = hosts_resolver(tmp_path, "  fallthrough\n  no_reverse")
    assert isinstance(lookup(r, "nope.example.org").value, outcome.FallthroughNXDomain)
    assert isinstance(lookup(r, "1.0.0.10.in-addr.arpa", tdns.PTR).value, outcome.FallthroughNXDomain)


def test_hosts_file_is_reloaded_when_it_changes(tmp_path):
    r, path, clock, p = hosts_resolver(tmp_path, "  reload 2s")
    svc = KubernetaiService(p, reactor)
    timers = [s for s in svc if s.name is None and hasattr(s, "step")]
    for t in timers:
        t.startService()
    path.write_text("10.0.0.7 new.example.org\n" + "#" * 50)
    clock.advance(2)
    assert success(r.query(tdns.Query("new.example.org", tdns.A)))[0][0].payload.dottedQuad() == "10.0.0.7"
    path.unlink()
    clock.advance(2)  # a vanished file keeps the last good table
    assert success(r.query(tdns.Query("new.example.org", tdns.A)))
    for t in timers:
        t.stopService()


# ------------------------------------------------------------------ forward (real sockets on loopback)


@pytest.fixture
def upstream(dns_upstream):
    """A DNS server on 127.0.0.1 answering example.test from RECORDS."""
    return dns_upstream("example.test.", RECORDS)


def forward_factory(port, options=""):
    p = load_text(f". {{\n forward example.test 127.0.0.1:{port} {{\n{options}\n }}\n}}", 53, reactor)
    return KubeDNSServerFactory(blocks=[p.blocks[0].block])


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_forward_relays_answers_and_nxdomain(upstream):
    f = forward_factory(upstream)
    out = yield f.handle_packet(dns.message.make_query("a.example.test", "A").to_wire(), ("127.0.0.1", 1), "udp")
    r = dns.message.from_wire(out)
    assert r.rcode() == 0 and r.answer[0][0].address == "10.0.0.1"
    out = yield f.handle_packet(dns.message.make_query("nope.example.test", "A").to_wire(), ("127.0.0.1", 1), "udp")
    r = dns.message.from_wire(out)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == 6


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_forward_retries_truncated_answers_over_tcp(upstream):
    f = forward_factory(upstream)
    out = yield f.handle_packet(dns.message.make_query("big.example.test", "A").to_wire(), ("127.0.0.1", 1), "tcp")
    r = dns.message.from_wire(out)
    assert len(r.answer[0]) == 200


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_forward_force_tcp_and_except(upstream):
    f = forward_factory(upstream, "  force_tcp\n  except nope.example.test")
    out = yield f.handle_packet(dns.message.make_query("a.example.test", "A").to_wire(), ("127.0.0.1", 1), "udp")
    assert dns.message.from_wire(out).answer[0][0].address == "10.0.0.1"
    out = yield f.handle_packet(dns.message.make_query("nope.example.test", "A").to_wire(), ("127.0.0.1", 1), "udp")
    assert dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL  # excluded: nobody serves it


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_forward_dead_upstream_is_servfail():
    with held_port() as port:  # bound, but nothing answers there
        f = forward_factory(port)
        out = yield f.handle_packet(dns.message.make_query("a.example.test", "A").to_wire(), ("127.0.0.1", 1), "udp")
    assert dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL


def test_forward_reads_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\nnameserver 127.0.0.1\nnameserver ::1 # six\noptions ndots:5\n")
    p = load_text(f". {{\n forward . {conf} 127.0.0.2:5353\n}}", 53, task.Clock())
    assert p.blocks[0].block.resolver.resolvers[0].upstreams == [("127.0.0.1", 53), ("::1", 53), ("127.0.0.2", 5353)]
    assert p.blocks[0].block.recursive


# ------------------------------------------------------------------ health / ready over HTTP


def KubeDNSQuery(port: int) -> defer.Deferred:
    """Query 127.0.0.1:port over UDP from a thread (dnspython is blocking)."""
    import dns.query
    from twisted.internet import threads

    q = dns.message.make_query("svc.ns.svc.cluster.local", "A")
    return threads.deferToThread(dns.query.udp, q, "127.0.0.1", port=port, timeout=2)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_health_ready_status_and_lameduck():
    text = (
        ".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0 {\n  lameduck 1s\n }\n ready 127.0.0.2:0\n"
        " kubernetai cluster.local {\n  endpoint http://127.0.0.1:1\n  startup_timeout 0\n }\n}"
    )
    p = load_text(text, 53, reactor)
    svc = KubernetaiService(p, reactor)
    svc.startService()
    ports = {listener.name: listener.port for listener in svc if isinstance(listener, HTTPListener)}
    hp, rp = ports["http 127.0.0.1:0"], ports["http 127.0.0.2:0"]
    try:
        r = yield treq.get(f"http://127.0.0.1:{hp}/health")
        assert r.code == 200 and (yield r.text()) == "OK"
        r = yield treq.get(f"http://127.0.0.2:{rp}/ready")
        assert r.code == 503 and (yield r.text()) == "cluster.local@127.0.0.1:1"  # the stanza's name (issue 13)
        store = p.blocks[0].block.resolver.resolvers[0].store
        store.synced_scopes |= store.required  # as if every watch had listed
        r = yield treq.get(f"http://127.0.0.2:{rp}/ready")
        assert r.code == 200
        r = yield treq.get(f"http://127.0.0.2:{rp}/status")
        assert r.code == 200 and r.headers.getRawHeaders("content-type") == ["application/json"]
    finally:
        stopping = svc.stopService()
    # During lameduck: /health is 503 and DNS still answers.
    r = yield treq.get(f"http://127.0.0.1:{hp}/health")
    assert r.code == 503
    ((addr, port),) = svc.addresses()
    out = yield KubeDNSQuery(port)
    assert out.rcode() == dns.rcode.NXDOMAIN  # still answering (an empty synced cluster) during lameduck
    yield stopping
    assert svc.addresses() and not svc.ports


def test_health_fails_when_answers_cannot_be_encoded(monkeypatch):
    """Issue 12, item 20: /health said 200 while every positive answer was SERVFAIL."""
    from twisted.names import dns as tdns

    from kubernetai import wire
    from kubernetai.plugins.health import Health

    assert wire.self_test() == "" and Health().page()[0] == 200

    def broken(buf, payload, comp):
        raise LookupError("unknown encoding: idna")

    monkeypatch.setitem(wire._RDATA, tdns.Record_A, broken)  # what writes an A record's data
    code, _, body = Health().page()
    assert code == 503 and b"cannot encode answers: LookupError: unknown encoding: idna" in body
