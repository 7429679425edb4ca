"""Issue 13 without sockets: stanza names, --version, log lines, the collector's pieces."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest
from prometheus_client import generate_latest
from twisted.internet import task
from twisted.logger import formatEvent
from twisted.names import dns as tdns

from kubernetai.build import load_text
from kubernetai.corefile import CorefileError
from kubernetai.metrics import TIME_BUCKETS, Histogram, Metrics, QueryMeter, qtype_label

from .conftest import result
from .test_cache import rig
from .test_plugins import captured, event, texts


def names_of(text: str) -> list[str]:
    plan = load_text(text, 53, task.Clock())
    return [c.opts.name() for c in plan.server.clusters]


def test_stanza_names_are_short_and_distinct(tmp_path):
    (tmp_path / "a.yaml").write_text("")
    text = f""". {{
 kubernetai cluster.local 10.in-addr.arpa ip6.arpa {{
  endpoint https://10.0.0.1:6443 https://10.0.0.2:6443
 }}
 kubernetai cluster.local {{
  endpoint https://10.0.0.1:6443
  fallthrough
 }}
 kubernetai cluster2.local {{
  manifests {tmp_path}/a.yaml
 }}
 kubernetai cluster3.local {{
  endpoint https://10.0.0.3
  name west
 }}
}}"""
    assert names_of(text) == [
        "cluster.local@10.0.0.1:6443",  # the first zone only, not 16 reverse zones
        "cluster.local@10.0.0.1:6443#2",
        "cluster2.local@manifests",
        "west",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a b", "wrong argument count"),
        ('"has space"', "invalid stanza name"),
        ("bad/slash", "invalid stanza name"),
        ("x" * 64, "invalid stanza name"),
    ],
)
def test_a_bad_name_is_refused_with_its_line(name, problem):
    with pytest.raises(CorefileError, match=problem) as e:
        load_text(f". {{\n kubernetai {{\n  endpoint https://10.0.0.1\n  name {name}\n }}\n}}", 53, task.Clock())
    assert e.value.line == 4


def test_a_name_given_twice_is_refused():
    text = ". {\n kubernetai a.local {\n  endpoint https://10.0.0.1\n  name x\n }\n"
    text += " kubernetai b.local {\n  endpoint https://10.0.0.2\n  name x\n }\n}"
    with pytest.raises(CorefileError, match="already the name of the stanza at Corefile:2"):
        load_text(text, 53, task.Clock())


def test_version_option_prints_kubernetai_and_twisted(capsys):
    from kubernetai import __version__
    from kubernetai.tap import Options

    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kubernetai {__version__} (Twisted ") and "Python" in out


def test_log_lines_say_any_not_all_records(monkeypatch):
    from kubernetai.plugins import log as log_plugin

    events = captured(monkeypatch, log_plugin)
    p = load_text(". {\n log\n}", 53, task.Clock())
    p.blocks[0].block.observers[0](event(qtype=tdns.ALL_RECORDS))
    (line,) = texts(events)
    assert '"ANY IN svc.ns.svc.cluster.local.' in line and not line.startswith("[INFO]")


def test_errors_see_servfails_served_from_the_answer_cache():
    """A SERVFAIL ("not synced") is cached like any answer; the errors plugin must still see each one."""
    seen: list = []
    f, store, observed = rig()
    for _ in range(2):
        q = dns.message.make_query("web.ns.svc.cluster.local", "A")
        out = dns.message.from_wire(result(f.handle_packet(q.to_wire(), ("127.0.0.1", 9), "udp")))
        assert out.rcode() == dns.rcode.SERVFAIL
    assert len(f.answer_cache) == 1 and f.answer_cache.hits == 1
    seen = [e.failure for e in observed]
    assert len(seen) == 2 and all(failure is not None for failure in seen)
    assert "not synced" in seen[1].getErrorMessage()


def test_lameduck_start_and_end_are_logged(monkeypatch):
    from kubernetai.plugins import health as health_plugin

    events = captured(monkeypatch, health_plugin)
    clock = task.Clock()
    d = health_plugin.Health(lameduck=2.0).start_lameduck(clock)
    clock.advance(2)
    assert d.called
    lines = [formatEvent(e) for e in events]
    assert lines[0].startswith("health: lameduck for 2.0s") and lines[1] == "health: lameduck over, stopping"


def test_the_api_client_and_status_listeners_are_quiet():
    from twisted.web import resource

    from kubernetai.cluster.kubeapi import _QuietHTTP11ClientFactory, http_client_for
    from kubernetai.cluster.kubeconfig import Connection
    from kubernetai.plugins.http import QuietSite

    client = http_client_for(Connection("http://127.0.0.1:1", None, None, "test"), task.Clock())
    assert client._agent._pool._factory is _QuietHTTP11ClientFactory and not _QuietHTTP11ClientFactory.noisy
    site = QuietSite(resource.Resource())
    assert not site.noisy and site.log(object()) is None  # no access line per probe


def test_histogram_buckets_are_cumulative_and_coredns_shaped():
    assert TIME_BUCKETS[0] == 0.00025 and len(TIME_BUCKETS) == 16 and TIME_BUCKETS[-1] == 0.00025 * 2**15
    h = Histogram((1, 2, 4))
    for v in (0.5, 1, 3, 10):
        h.observe(v)
    assert h.buckets() == [("1.0", 2.0), ("2.0", 2.0), ("4.0", 3.0), ("+Inf", 4.0)] and h.sum == 14.5
    assert qtype_label(tdns.A) == "A" and qtype_label(tdns.ALL_RECORDS) == "ANY" and qtype_label(99) == "other"


def test_exposition_is_prometheus_clients_and_counts_what_was_recorded():
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics(clock=lambda: 100.0)
    meter = m.meter("dns://:53")
    meter.record("cluster.local.", "udp", "1", tdns.A, True, "NOERROR", "kubernetai", "east", 40, 90, 0.0003)
    meter.record("cluster.local.", "tcp", "2", tdns.SRV, False, "NXDOMAIN", "kubernetai", "east", 50, 120, 0.002)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(m.registry).decode())
        for s in family.samples
    }
    base = (("server", "dns://:53"), ("view", ""), ("zone", "cluster.local."))

    def at(name, **labels):
        return found[(name, tuple(sorted(dict(base, **labels).items())))]

    assert at("coredns_dns_requests_total", proto="udp", family="1", type="A") == 1
    assert at("coredns_dns_requests_total", proto="tcp", family="2", type="SRV") == 1
    assert at("coredns_dns_responses_total", rcode="NXDOMAIN", plugin="kubernetai") == 1
    assert at("coredns_dns_do_requests_total") == 1
    assert at("coredns_dns_request_duration_seconds_count") == 2
    assert at("coredns_dns_request_duration_seconds_bucket", le="0.0005") == 1  # 0.3 ms; 2 ms is later
    assert at("coredns_dns_response_size_bytes_bucket", proto="tcp", le="200.0") == 1
    assert found[("kubernetai_start_time_seconds", ())] == 100.0
    assert meter.families()["by_cluster"]["east"] == 2


def test_any_goes_through_the_chain_like_any_other_type():
    """Twisted's ResolverChain sent ANY past our chain: no request context, no trace, no plugin label."""
    from kubernetai.chain import chain
    from kubernetai.request import RequestInfo, Trace, request_info

    from .test_server import TableResolver

    first = TableResolver("example.org.", {})
    info = RequestInfo(trace=Trace())
    token = request_info.set(info)
    try:
        d = chain([first]).query(tdns.Query(b"x.example.org", tdns.ALL_RECORDS, tdns.IN))
    finally:
        request_info.reset(token)
    d.addErrback(lambda f: None)
    assert info.trace.answered_by is first and not info.trace.cacheable


def test_the_grafana_dashboard_uses_only_metrics_we_export():
    import json
    import re
    from pathlib import Path

    from kubernetai.plugins.forward import ForwardResolver

    dashboard = json.loads((Path(__file__).parent.parent / "etc" / "grafana" / "kubernetai.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"\b(?:coredns|kubernetai)_\w+", e)
    }
    m = Metrics()
    m.add_source(ForwardResolver(".", [("127.0.0.1", 53)]).metrics)
    exported = set(re.findall(r"^# TYPE (\S+)", generate_latest(m.registry).decode(), re.M))
    assert used and used <= exported, used - exported
    assert len(dashboard["panels"]) >= 10


def test_an_error_while_answering_is_a_servfail_and_counted_as_a_panic():
    from twisted.internet import defer

    from kubernetai.server import Block, KubeDNSServerFactory

    class Broken:
        def query(self, q, timeout=None):
            return defer.succeed(([object()], [], []))  # not a record: encoding fails

    f = KubeDNSServerFactory(blocks=[Block((".",), Broken())])
    m = Metrics()
    m.panic_counts.append(lambda: f.panics)
    q = dns.message.make_query("x.example.org", "A")
    out = dns.message.from_wire(result(f.handle_packet(q.to_wire(), ("127.0.0.1", 9), "udp")))
    assert out.rcode() == dns.rcode.SERVFAIL and f.panics == 1
    assert "coredns_panics_total 1.0" in generate_latest(m.registry).decode()


def test_a_query_no_block_serves_is_counted_as_dropped():
    from kubernetai.server import Block, KubeDNSServerFactory

    from .test_server import TableResolver

    block = Block(("cluster.local.",), TableResolver("cluster.local.", {}), metered=True)
    f = KubeDNSServerFactory(blocks=[block])
    f.meter = QueryMeter("dns://:53")
    q = dns.message.make_query("x.example.org", "A")
    out = dns.message.from_wire(result(f.handle_packet(q.to_wire(), ("::1", 9), "udp")))
    assert out.rcode() == dns.rcode.REFUSED
    families = f.meter.families()
    assert families["requests"] == {("dropped", "udp", "2", "A"): 1}  # as CoreDNS: zone "dropped"
    assert families["responses"] == {("dropped", "REFUSED", ""): 1}


@pytest.mark.parametrize("kind", ["never", "transmission", "failed", "lost"])
def test_any_connection_that_gives_no_answer_fails_over(kind):
    """A down endpoint behind a load balancer closes at once; which error Twisted raises depends on timing."""
    from twisted.internet import defer
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure
    from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived

    from kubernetai.cluster.kubeapi import ApiClient
    from kubernetai.cluster.kubeconfig import Connection

    errors = {
        "never": ResponseNeverReceived([Failure(ConnectionLost())]),
        "transmission": RequestTransmissionFailed([Failure(ConnectionLost())]),
        "failed": ResponseFailed([Failure(ConnectionLost())]),
        "lost": ConnectionLost(),
    }

    class Auth:
        def header(self):
            return defer.succeed(None)

    asked = []

    class Down:
        def get(self, url, **kw):
            asked.append(url)
            return defer.fail(errors[kind])

    conn = Connection("http://127.0.0.1:1", Auth(), None, "test", fallbacks=("http://127.0.0.1:2",))
    api = ApiClient(conn, task.Clock(), http=Down())
    d = api.get("/api/v1/services")
    d.addErrback(lambda f: None)
    assert [url[:18] for url in asked] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]


class _Answer:
    code = 200


def _client(first, fallbacks, clock, http, **kw):
    """An ApiClient over ``http`` with no credentials, and its connection."""
    from twisted.internet import defer

    from kubernetai.cluster.kubeapi import ApiClient
    from kubernetai.cluster.kubeconfig import Connection

    class Auth:
        def header(self):
            return defer.succeed(None)

    conn = Connection(first, Auth(), None, "test", fallbacks=fallbacks, **kw)
    return conn, ApiClient(conn, clock, http=http)


def test_refusals_of_an_endpoint_already_left_do_not_move_again():
    """The watches of a stanza share one connection: three refused by A at once move it to B once, not B-A-B."""
    from twisted.internet import defer
    from twisted.internet.error import ConnectionRefusedError

    class Pending:
        def __init__(self):
            self.asked = []

        def get(self, url, **kw):
            d = defer.Deferred()
            self.asked.append((url, d))
            return d

    http = Pending()
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    conn, api = _client(a, (b,), task.Clock(), http)
    for kind in ("services", "endpointslices", "namespaces"):
        api.get(f"/api/v1/{kind}").addErrback(lambda f: None)
    assert [url.startswith(a) for url, _ in http.asked] == [True, True, True]
    for _, d in list(http.asked):
        d.errback(ConnectionRefusedError())
    assert conn.url_in_use == b
    assert [url.startswith(b) for url, _ in http.asked[3:]] == [True, True, True]  # each asked B at once
    assert conn.serving_url == b  # none answered yet: the one to ask


def test_status_shows_the_endpoint_that_answered_while_the_first_is_tried_again():
    """Trying A again after primary_retry, while it is still down, leaves /status on B, where the data comes from."""
    from twisted.internet import defer
    from twisted.internet.error import ConnectionRefusedError

    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"

    class BOnly:
        def get(self, url, **kw):
            return defer.succeed(_Answer()) if url.startswith(b) else defer.fail(ConnectionRefusedError())

    clock = task.Clock()
    conn, api = _client(a, (b,), clock, BOnly(), primary_retry=1.0)
    api.get("/api/v1/services").addErrback(lambda f: None)  # A refuses
    api.get("/api/v1/services")  # B answers
    assert conn.serving_url == b
    clock.advance(2)
    pending = defer.Deferred()

    asked = []

    class Slow:
        def get(self, url, **kw):
            asked.append(url[:18])
            return pending if url.startswith(a) else defer.succeed(_Answer())

    api.http = Slow()
    got = []
    api.get("/api/v1/services").addCallback(got.append)
    assert asked == [a]  # back to the first after primary_retry
    assert conn.url_in_use == a and conn.serving_url == b
    pending.errback(ConnectionRefusedError())
    assert asked == [a, b] and len(got) == 1
    assert conn.url_in_use == b and conn.serving_url == b


def test_a_request_refused_by_the_first_endpoint_goes_to_the_next_at_once():
    """Not after the watch's backoff: a watch whose retries always fall past primary_retry would else only ever ask A."""
    from twisted.internet import defer
    from twisted.internet.error import ConnectionRefusedError

    a, b, c = "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"
    asked = []

    class OnlyC:
        def get(self, url, **kw):
            asked.append(url[:18])
            return defer.succeed(_Answer()) if url.startswith(c) else defer.fail(ConnectionRefusedError())

    conn, api = _client(a, (b, c), task.Clock(), OnlyC())
    got = []
    api.get("/api/v1/services").addCallback(got.append)
    assert asked == [a, b, c] and len(got) == 1 and conn.serving_url == c

    class Down:
        def get(self, url, **kw):
            asked.append(url[:18])
            return defer.fail(ConnectionRefusedError())

    asked.clear()
    api.http = Down()
    failed = []
    api.get("/api/v1/services").addErrback(failed.append)
    assert asked == [c, a, b] and len(failed) == 1  # each endpoint once, then the watch's own backoff
