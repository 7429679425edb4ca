"""Watcher against the fake API in memory (StubTreq) with deterministic time (Clock)."""

from __future__ import annotations

import pytest
from treq.testing import StubTreq
from twisted.internet import defer, task

from kubernetai.cluster.kubeapi import ApiClient, TokenBucket
from kubernetai.cluster.kubeconfig import Connection, NoAuth, StaticAuth
from kubernetai.cluster.store import ClusterStore
from kubernetai.cluster.watch import Backoff, ResourceSpec, Watcher

from .conftest import result
from .fakeapi import FakeApi, FakeCluster, service, slice_


class Rig:
    """A cluster, an in-memory API in front of it, and a watcher on Services."""

    def __init__(self, objects=(), spec=None, auth=None, page_size=500, **api):
        self.clock = task.Clock()
        self.cluster = FakeCluster(clock=self.clock)
        self.cluster.load(list(objects))
        self.stub = StubTreq(FakeApi(self.cluster))
        self.api = ApiClient(
            Connection("http://fake", auth or NoAuth(), None, "fake"), self.clock, http=self.stub, **api
        )
        self.store = ClusterStore(clock=self.clock.seconds)
        self.watcher = Watcher(
            spec or ResourceSpec("Service", "/api/v1", "services"),
            self.api,
            self.store,
            self.clock,
            "test",
            rand=lambda: 0.5,
            page_size=page_size,
        )

    def start(self):
        self.watcher.startService()
        self.flush()
        return self

    def flush(self):
        self.stub.flush()

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.flush()

    def names(self):
        return sorted(name for (_, name) in self.store.objects["Service"])

    def requests(self, watch=None):
        out = self.cluster.requests
        if watch is not None:
            out = [r for r in out if (r[1].get("watch") == "1") == watch]
        return out

    def stop(self):
        d = self.watcher.stopService()
        self.flush()
        return d


@pytest.fixture
def rig():
    rigs = []

    def make(*a, **kw):
        r = Rig(*a, **kw)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.stop()


def test_paginated_list_then_watch(rig):
    r = rig([service(f"s{i}", ip=f"10.96.0.{i}") for i in range(7)], page_size=3).start()
    assert r.names() == [f"s{i}" for i in range(7)]
    lists = r.requests(watch=False)
    assert [p.get("continue") for _, p, _ in lists] == [None, "c1", "c2"]
    assert all(p["limit"] == "3" for _, p, _ in lists)
    ((_, w, _),) = r.requests(watch=True)
    assert w["resourceVersion"] == str(r.cluster.rv)
    assert w["allowWatchBookmarks"] == "true" and 240 <= int(w["timeoutSeconds"]) <= 360
    assert r.store.synced and r.watcher.state == "watching"


def test_events_add_modify_delete(rig):
    r = rig([service("a")]).start()
    r.cluster.add(service("b", ip="10.96.0.11"))
    r.flush()
    assert r.names() == ["a", "b"]
    r.cluster.add(service("b", ip="10.96.0.99"))
    r.flush()
    assert r.store.service("default", "b").cluster_ips == ("10.96.0.99",)
    r.cluster.delete("Service", "default", "a")
    r.flush()
    assert r.names() == ["b"]
    assert r.watcher.rv == str(r.cluster.rv)


def test_json_line_split_across_chunks(rig):
    r = rig().start()
    r.cluster.split_lines = True
    r.cluster.add(service("split"))
    r.flush()
    assert r.names() == ["split"]


def test_bookmark_moves_resource_version(rig):
    r = rig([service("a")]).start()
    r.cluster.rv += 50  # other resources changed
    r.cluster.bookmark()
    r.flush()
    assert r.watcher.rv == str(r.cluster.rv)
    r.cluster.end_watches()
    r.flush()
    assert r.requests(watch=True)[-1][1]["resourceVersion"] == str(r.cluster.rv)
    assert len(r.requests(watch=False)) == 1  # resumed, not relisted


def test_stream_end_resumes_from_last_version_without_relist(rig):
    r = rig([service("a")]).start()
    r.cluster.add(service("b"))
    r.flush()
    r.cluster.end_watches()
    r.flush()
    assert len(r.requests(watch=False)) == 1
    assert r.requests(watch=True)[-1][1]["resourceVersion"] == r.watcher.rv


@pytest.mark.parametrize("as_event", [True, False], ids=["ERROR event", "HTTP 410"])
def test_gone_relists_and_deletes_what_vanished(rig, as_event):
    r = rig([service("a"), service("b", ip="10.96.0.11")]).start()
    r.cluster.gone_as_event = as_event
    # The API server restarts; meanwhile b is deleted and c created, history compacted.
    r.cluster.drop_watches()
    r.cluster.objects["Service"].pop(("default", "b"))
    r.cluster.add(service("c", ip="10.96.0.12"))
    r.cluster.compact()
    r.flush()
    assert r.names() == ["a", "b"]  # still serving the last good data while backing off
    r.advance(1.0)  # first backoff: 1s * (0.8 + 0.4 * 0.5)
    assert r.names() == ["a", "c"]
    assert len(r.requests(watch=False)) == 2
    assert r.watcher.state == "watching"


def test_server_errors_back_off_doubling_to_a_cap(rig):
    r = rig([service("a")]).start()
    r.cluster.fail(500, count=100)
    r.cluster.end_watches()
    r.flush()
    assert waits_between_requests(r, 8) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert r.names() == ["a"]
    r.cluster.failures.clear()
    r.advance(30)
    assert r.watcher.state == "watching"
    r.cluster.add(service("b"))
    r.flush()
    assert r.names() == ["a", "b"]


def test_backoff_jitter_bounds():
    b = Backoff(rand=lambda: 0.0)
    assert b.next() == pytest.approx(0.8)
    b = Backoff(rand=lambda: 1.0)
    assert [round(b.next(), 2) for _ in range(7)] == [1.2, 2.4, 4.8, 9.6, 19.2, 36.0, 36.0]


def test_429_honours_retry_after(rig):
    r = rig([service("a")]).start()
    r.cluster.fail(429, retry_after=7, watch_only=True)
    r.cluster.end_watches()
    r.flush()
    n = len(r.cluster.requests)
    r.advance(6.9)
    assert len(r.cluster.requests) == n
    r.advance(0.2)
    assert len(r.cluster.requests) == n + 1


def test_401_refreshes_credentials_once_then_retries(rig):
    class Rotating:
        def __init__(self):
            self.tokens = iter(["old", "new", "newer"])
            self.current = next(self.tokens)
            self.invalidated = 0

        def header(self):
            from twisted.internet import defer

            return defer.succeed(f"Bearer {self.current}".encode())

        def invalidate(self):
            self.invalidated += 1
            self.current = next(self.tokens)

        def client_certificate(self):
            return None

    auth = Rotating()
    r = rig([service("a")], auth=auth)
    r.cluster.token = "new"
    r.start()
    assert auth.invalidated == 1 and r.store.synced
    auths = [h.get("authorization") for _, _, h in r.cluster.requests]
    assert auths == ["Bearer old", "Bearer new", "Bearer new"]


def test_401_twice_backs_off(rig):
    r = rig([service("a")], auth=StaticAuth(b"Bearer wrong"))
    r.cluster.token = "right"
    r.start()
    assert not r.store.synced and "401" in r.watcher.state
    assert len(r.cluster.requests) == 2  # one refresh-and-retry, then backoff


def test_malformed_json_line_rewatches_after_backoff(rig):
    r = rig([service("a")]).start()
    (w,) = r.cluster.watches
    w.request.write(b'{"type": "ADDED", "object": {broken\n')
    r.flush()
    assert "JSONDecodeError" in r.watcher.state
    r.advance(1.0)
    assert r.watcher.state == "watching"
    assert r.requests(watch=True)[-1][1]["resourceVersion"] == r.watcher.rv
    assert r.names() == ["a"]


def test_idle_watch_is_dropped_and_resumed(rig):
    r = rig([service("a")]).start()
    n = len(r.requests(watch=True))
    r.advance(r.watcher.idle_timeout + 0.1)
    r.advance(1.0)
    assert len(r.requests(watch=True)) == n + 1
    assert r.watcher.state == "watching"


def test_hanging_list_times_out_and_retries(rig):
    r = rig([service("a")])
    r.cluster.hang_next = 1
    r.start()
    assert not r.store.synced
    r.advance(r.watcher.request_timeout)
    assert "no answer" in r.watcher.state
    r.advance(1.0)
    assert r.store.synced and r.names() == ["a"]


def test_unreachable_api_keeps_last_good_data(rig):
    r = rig([service("a")]).start()
    r.cluster.fail(500, count=3)
    r.cluster.drop_watches()
    r.advance(10)
    assert r.names() == ["a"] and r.store.synced


def test_label_selector_and_namespace_scope(rig):
    objs = [
        service("a", labels={"app": "x"}),
        service("b", labels={"app": "y"}),
        service("c", ns="other", labels={"app": "x"}),
    ]
    r = rig(
        objs, spec=ResourceSpec("Service", "/api/v1", "services", namespace="default", label_selector="app=x")
    ).start()
    assert sorted(r.store.objects["Service"]) == [("default", "a")]
    path, params, _ = r.cluster.requests[0]
    assert path == "/api/v1/namespaces/default/services" and params["labelSelector"] == "app=x"


def test_relist_in_one_namespace_keeps_other_namespaces():
    store = ClusterStore()
    from kubernetai.cluster.objects import service as conv

    store.relist(("Service", "a"), [conv(service("x", ns="a"))])
    store.relist(("Service", "b"), [conv(service("y", ns="b"))])
    store.relist(("Service", "a"), [])
    assert list(store.objects["Service"]) == [("b", "y")]


def test_endpointslices_are_indexed_by_service(rig):
    spec = ResourceSpec("EndpointSlice", "/apis/discovery.k8s.io/v1", "endpointslices")
    r = rig([slice_("web", ["10.0.0.1", "10.0.0.2"]), slice_("web", ["10.0.0.3"], name="web-2")], spec=spec).start()
    assert sorted(s.name for s in r.store.slices("default", "web")) == ["web-2", "web-abcde"]
    assert set(r.store.indexes["slices_by_ip"]) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    r.cluster.delete("EndpointSlice", "default", "web-2")
    r.flush()
    assert "10.0.0.3" not in r.store.indexes["slices_by_ip"]


def test_stop_cancels_cleanly(rig):
    r = rig([service("a")]).start()
    d = r.stop()
    assert result(d) is None
    assert not r.cluster.watches


def test_token_bucket_limits_rate():
    clock = task.Clock()
    bucket = TokenBucket(clock, qps=2, burst=2)
    fired = []
    for i in range(5):
        bucket.acquire().addCallback(lambda _, i=i: fired.append(i))
    assert fired == [0, 1]
    clock.advance(0.5)
    assert fired == [0, 1, 2]
    clock.advance(1.0)
    assert fired == [0, 1, 2, 3, 4]


def test_max_inflight_caps_concurrent_requests(rig):
    r = rig([service("a")], max_inflight=1)
    r.cluster.hang_next = 1
    d1 = r.api.get("/api/v1/services")
    d2 = r.api.get("/api/v1/services")
    r.flush()
    assert len(r.cluster.requests) == 1  # the second waits for the first's headers
    d1.cancel()
    r.flush()
    assert len(r.cluster.requests) == 2
    d1.addErrback(lambda f: None)
    assert result(d2).code == 200


def test_stop_from_a_sync_callback_leaves_no_watch_behind(rig):
    # The store's sync callbacks run inside the list; a stop there must not start the watch.
    r = rig([service("a")])
    r.store.when_synced(lambda: r.watcher.stopService())
    r.start()
    assert r.store.synced
    assert r.requests(watch=True) == [] and not r.cluster.watches


def test_403_says_which_resource_is_forbidden_and_what_to_check(rig):
    spec = ResourceSpec("EndpointSlice", "/apis/discovery.k8s.io/v1", "endpointslices", "prod")
    r = rig(spec=spec)
    r.cluster.fail(403, count=100, paths="endpointslices")
    r.start()
    assert r.watcher.refused and not r.store.synced
    assert r.watcher.state == (
        "forbidden (HTTP 403): the credentials may not list/watch endpointslices (API group 'discovery.k8s.io') "
        "in namespace prod; check RBAC (etc/rbac.yaml)"
    )
    r.cluster.failures.clear()
    r.advance(2)
    assert r.store.synced and not r.watcher.refused and r.watcher.state == "watching"


def test_403_after_sync_keeps_serving_and_says_so(rig):
    r = rig([service("a")]).start()
    r.cluster.fail(403, count=100)
    r.cluster.end_watches()
    r.flush()
    assert r.watcher.refused and r.names() == ["a"]
    assert r.watcher.state.endswith("check RBAC (etc/rbac.yaml), serving the last good data")
    assert "API group ''" in r.watcher.state and "cluster-wide" in r.watcher.state


def test_a_missing_crd_is_named_and_its_kind_counts_as_empty(rig):
    spec = ResourceSpec("ServiceImport", "/apis/multicluster.x-k8s.io/v1alpha1", "serviceimports")
    r = rig(spec=spec)
    r.cluster.fail(404, count=3, paths="serviceimports")
    r.start()
    assert r.store.synced and not r.watcher.refused  # the stanza becomes ready, without imports
    assert "the ServiceImport CRD (serviceimports.multicluster.x-k8s.io" in r.watcher.state
    for _ in range(40):  # installed meanwhile: found on a later try (backoff 1 + 2 + 4 s)
        r.advance(0.25)
    assert r.watcher.state == "watching"


def waits_between_requests(r, tries: int) -> list[float]:
    """Seconds between the watcher's requests, for ``tries`` requests (bounded: 60 s each)."""
    delays = []
    for _ in range(tries):
        before = len(r.cluster.requests)
        waited = 0.0
        while len(r.cluster.requests) == before and waited < 60:
            r.advance(0.25)
            waited += 0.25
        delays.append(waited)
    return delays


def test_backoff_resets_once_a_watch_delivers_so_each_outage_starts_from_one_second(rig):
    r = rig([service("a")]).start()
    for outage in range(3):  # the same abrupt outage, three times: the waits do not grow from one to the next
        r.cluster.fail(500, count=3)
        r.cluster.drop_watches()
        r.flush()
        assert waits_between_requests(r, 4) == [1.0, 2.0, 4.0, 8.0], outage  # the 4th request: the new watch
        r.cluster.add(service(f"after-{outage}"))  # the new watch delivers: backoff resets
        r.advance(0.25)
        assert f"after-{outage}" in r.names()


def test_connection_failures_retry_within_a_second_however_long_they_last(rig, monkeypatch):
    from twisted.internet.error import ConnectionRefusedError

    r = rig([service("a")]).start()
    attempts: list[float] = []

    def refused(self, *a, **kw):
        attempts.append(r.clock.seconds())
        return defer.fail(ConnectionRefusedError())

    with monkeypatch.context() as m:
        m.setattr(ApiClient, "get_json", refused)
        m.setattr(ApiClient, "get", refused)
        r.cluster.end_watches()
        r.flush()
        for _ in range(240):  # a minute of outage, in 0.25 s steps
            r.advance(0.25)
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert len(attempts) > 40 and max(gaps) <= 1.25  # the 1 s cap, ±20% jitter, in 0.25 s steps
        assert r.watcher.state.startswith("connection refused")
    r.cluster.add(service("b"))
    r.advance(2.5)
    assert r.names() == ["a", "b"]


def test_a_410_after_reconnecting_relists_at_once_however_many_came_before(rig):
    r = rig([service("a")]).start()
    for round_ in range(3):  # each time: the connection drops, history is compacted meanwhile
        r.cluster.drop_watches()
        r.cluster.fail(500, count=4, watch_only=True)  # a few failed reconnects first
        r.flush()
        r.cluster.add(service(f"new-{round_}"))
        r.cluster.compact()
        waits_between_requests(r, 5)  # the dropped watch, four failed reconnects, then the 410 watch
        kinds = ["watch" if "watch" in params else "list" for _, params, _ in r.cluster.requests[-3:]]
        assert kinds == ["watch", "list", "watch"], round_  # the 410 watch, at once the relist, a new watch
        assert f"new-{round_}" in r.names()


def test_pods_are_listed_by_phase_and_label_as_coredns_lists_them(rig):
    from kubernetai.cluster.options import KubernetesOptions
    from kubernetai.cluster.selectors import parse_selector
    from kubernetai.cluster.stanza import resource_specs

    from .fakeapi import pod

    opts = KubernetesOptions(zones=("cluster.local.",), pods="verified", labels=parse_selector("app=x"))
    (spec,) = [s for s in resource_specs(opts) if s.kind == "Pod"]
    assert spec.label_selector == "app=x" and "status.phase!=Succeeded" in spec.field_selector
    running, done = pod("run", "10.244.0.1"), pod("done", "10.244.0.2")
    done["status"]["phase"] = "Succeeded"
    for p in (running, done):
        p["metadata"]["labels"] = {"app": "x"}
    r = rig([running, done], spec=spec).start()
    assert sorted(name for (_, name) in r.store.objects["Pod"]) == ["run"]


def test_noendpoints_with_multicluster_still_watches_multicluster_slices():
    from kubernetai.cluster.options import KubernetesOptions
    from kubernetai.cluster.stanza import resource_specs

    zones = ("cluster.local.", "clusterset.local.")
    opts = KubernetesOptions(zones=zones, noendpoints=True, multicluster=zones[1:])
    (spec,) = [s for s in resource_specs(opts) if s.kind == "EndpointSlice"]
    assert spec.label_selector == "multicluster.kubernetes.io/service-name"
    assert not [
        s for s in resource_specs(KubernetesOptions(zones=zones, noendpoints=True)) if s.kind == "EndpointSlice"
    ]


def test_a_list_answer_past_the_size_limit_is_an_error_not_memory(rig):
    r = rig([service(f"s{i}") for i in range(50)], max_body=2000).start()
    assert not r.store.synced
    assert "an answer larger than 2,000 bytes from /api/v1/services" in r.watcher.state
    r.api.max_body = 10**6
    r.advance(2)
    assert r.store.synced and len(r.names()) == 50
