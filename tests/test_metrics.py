"""Issue 13: /metrics after known traffic, per cluster, with cached answers and a cluster that lost its API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task

from kubernetai.plugins.http import HTTPListener

from .fakeapi import namespace, service, slice_
from .test_multicluster import Clusters, addrs, ask, port_of, serve

pytestmark = pytest.mark.e2e


@pytest.fixture
def clusters():
    c = Clusters()
    yield c
    pytest_twisted.blockon(c.close())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, metric: str, /, **labels: str) -> float:
    return found.get((metric, tuple(sorted(labels.items()))), 0.0)


def total(found: dict, metric: str, /, **labels: str) -> float:
    """Sum over samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == metric and set(labels.items()) <= set(ls))


@pytest_twisted.inlineCallbacks
def test_metrics_after_known_traffic(clusters):
    trigger = (datetime.now(UTC) - timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    web_slice = slice_("web", ["10.1.0.1"], ns="default")
    clusters.add("a", [namespace("default"), service("web", ip="10.96.0.1"), web_slice])
    clusters.add("b", [namespace("default"), service("db", ip="10.97.0.1")])
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    ready 127.0.0.1:0
    kubernetai cluster.local {{
        endpoint {clusters.url("a")}
        name east
        fallthrough
    }}
    kubernetai cluster.local {{
        endpoint {clusters.url("b")}
    }}
}}""")
    try:
        (http,) = [s for s in svc if isinstance(s, HTTPListener)]
        port = port_of(svc)
        east = svc.plan.server.clusters[0]
        for _ in range(200):  # every watch established: the change below comes as a watch event
            if east.connected:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        # The endpoints controller changes the slice (its trigger time 3 s ago): one programming latency.
        web_slice["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": trigger}
        web_slice["endpoints"][0]["addresses"] = ["10.1.0.2"]
        clusters.clusters["a"].add(web_slice)
        for _ in range(100):
            if any(w.programming for w in east._watchers()):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        for _ in range(3):  # the first is computed, the next two come from the answer cache
            r = yield ask(port, "web.default.svc.cluster.local")
            assert addrs(r) == ["10.96.0.1"]
        r = yield ask(port, "DB.default.svc.cluster.local", tcp=True)  # through A's fallthrough to B
        assert addrs(r) == ["10.97.0.1"]
        r = yield ask(port, "nothing.default.svc.cluster.local")
        assert r.rcode() == 3
        yield ask(port, "web.default.svc.cluster.local", "SRV")

        clusters.stop("b")  # B loses its API: its records still answer
        stanzas = svc.plan.server.clusters
        for _ in range(100):
            if not stanzas[1].connected:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        r = yield ask(port, "db.default.svc.cluster.local")
        assert addrs(r) == ["10.97.0.1"]

        resp = yield treq.get(f"http://127.0.0.1:{http.port}/metrics")
        assert resp.code == 200 and resp.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        found = samples((yield resp.text()))
        server = f"dns://127.0.0.1:{port}"
        base = {"server": server, "zone": ".", "view": ""}
        assert value(found, "coredns_dns_requests_total", **base, proto="udp", family="1", type="A") == 5
        assert value(found, "coredns_dns_requests_total", **base, proto="tcp", family="1", type="A") == 1
        assert value(found, "coredns_dns_requests_total", **base, proto="udp", family="1", type="SRV") == 1
        assert value(found, "coredns_dns_responses_total", **base, rcode="NOERROR", plugin="kubernetai") == 6
        assert value(found, "coredns_dns_responses_total", **base, rcode="NXDOMAIN", plugin="kubernetai") == 1
        assert value(found, "coredns_dns_request_duration_seconds_count", **base) == 7
        assert value(found, "coredns_dns_request_size_bytes_count", **base, proto="tcp") == 1
        assert value(found, "coredns_dns_response_size_bytes_bucket", **base, proto="udp", le="+Inf") == 6
        assert value(found, "coredns_plugin_enabled", **base, name="kubernetai") == 1
        assert value(found, "coredns_plugin_enabled", **base, name="prometheus") == 1
        assert total(found, "coredns_build_info") == 1
        # per cluster: answers (cached ones too), sync and connection state, objects, API requests
        b = f"cluster.local@127.0.0.1:{clusters.ports['b']}"  # the default name: first zone @ endpoint
        assert value(found, "kubernetai_cluster_answers_total", cluster="east") == 4  # 3 web A (2 cached), SRV
        assert value(found, "kubernetai_cluster_answers_total", cluster=b) == 3  # DB, db, and the NXDOMAIN (last say)
        assert value(found, "kubernetai_cluster_synced", cluster="east") == 1
        assert value(found, "kubernetai_cluster_synced", cluster=b) == 1  # still holds its last good data
        assert value(found, "kubernetai_cluster_connected", cluster="east") == 1
        assert value(found, "kubernetai_cluster_connected", cluster=b) == 0
        assert value(found, "kubernetai_cluster_objects", cluster="east", kind="Service") == 1
        assert value(found, "kubernetai_cluster_objects", cluster="east", kind="EndpointSlice") == 1
        assert total(found, "kubernetai_cluster_api_requests_total", cluster="east", code="200") >= 4
        assert total(found, "kubernetai_cluster_watch_restarts_total", cluster=b) >= 1
        assert total(found, "kubernetai_cluster_relists_total", cluster="east", reason="initial") >= 2
        assert value(found, "kubernetai_cluster_store_generation", cluster="east") >= 3
        assert value(found, "kubernetai_cluster_last_sync_timestamp_seconds", cluster="east") > 1.7e9
        # the answer cache: two hits of web A
        assert value(found, "kubernetai_answer_cache_hits_total", server=server) == 2
        assert value(found, "kubernetai_answer_cache_entries", server=server) >= 3
        # DNS programming latency, as CoreDNS computes it (the slice's trigger time was 3 s ago)
        count = value(found, "coredns_kubernetes_dns_programming_duration_seconds_count", service_kind="cluster_ip")
        assert count == 1
        latency = value(found, "coredns_kubernetes_dns_programming_duration_seconds_sum", service_kind="cluster_ip")
        assert 2.5 < latency < 60

        resp = yield treq.get(f"http://127.0.0.1:{http.port}/status")
        status = json.loads((yield resp.text()))
        assert status["version"] and status["uptime_seconds"] >= 0 and status["started"].endswith("+00:00")
        east = status["stanzas"]["east"]
        assert east["connected"] and east["synced"] and east["source"] == {"endpoints": [clusters.url("a")]}
        assert east["objects"]["Service"] == 1 and east["last_sync"].endswith("Z")
        assert set(east["resources"]) and all(r["resource_version"] for r in east["resources"].values())
        lost = status["stanzas"][b]
        assert not lost["connected"] and lost["last_error"] and lost["last_error_at"].endswith("Z")
        assert status["answer_cache"][server]["hits"] == 2
    finally:
        yield svc.stopService()


@pytest_twisted.inlineCallbacks
def test_blocks_without_prometheus_are_not_counted(clusters):
    clusters.add("a", [namespace("default"), service("web", ip="10.96.0.1")])
    svc = yield serve(f""".:0 {{
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    kubernetai cluster.local {{
        endpoint {clusters.url("a")}
    }}
}}
example.org:0 {{
    bind 127.0.0.1
    whoami
}}""")
    try:
        (http,) = [s for s in svc if isinstance(s, HTTPListener)]
        port = port_of(svc)
        yield ask(port, "web.default.svc.cluster.local")
        yield ask(port, "x.example.org")
        found = samples((yield (yield treq.get(f"http://127.0.0.1:{http.port}/metrics")).text()))
        assert total(found, "coredns_dns_requests_total") == 1
        assert total(found, "coredns_dns_requests_total", zone=".") == 1
        assert total(found, "coredns_plugin_enabled", name="whoami") == 0
    finally:
        yield svc.stopService()
