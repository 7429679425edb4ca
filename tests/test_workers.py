"""Issue 15: ``--workers N``, N processes on the same sockets while each cluster is watched once.

The copy a worker keeps of each store (replica.py) is checked against the
store it copies under random writes; then a real twistd with ``--workers 2``
on the fake API server: both processes answer, the API sees one watch per
resource, a change reaches every process, a killed worker comes back, its
queries are counted by the primary's /metrics, and no process outlives the
primary.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
import urllib.request

import dns.message
import dns.query
import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from kubernetai.cluster.objects import Endpoint, EndpointSlice, Service
from kubernetai.cluster.replica import SNAPSHOT_SCOPE, Journal, apply_ops, snapshot_ops
from kubernetai.cluster.store import ClusterStore

from .conftest import wait_for_log
from .fakeapi import FakeCluster, listen, namespace, service, slice_
from .test_multicluster import clusters as clusters  # noqa: F401  (the fixture)
from .test_reload import CLUSTER_A
from .twistd import Server

# ------------------------------------------------------------------ the copy of a store


def _view(store: ClusterStore) -> tuple:
    return (store.objects, store.indexes, store.required - {SNAPSHOT_SCOPE}, store.synced_scopes - {SNAPSHOT_SCOPE})


def _random_writes(store: ClusterStore, rng: random.Random, steps: int) -> None:
    def svc(i: int) -> Service:
        ip = f"10.96.{i % 7}.{rng.randrange(250)}"
        return Service(namespace=f"ns{i % 3}", name=f"s{i}", type="ClusterIP", cluster_ips=(ip,), ports=())

    def sl(i: int) -> EndpointSlice:
        eps = tuple(Endpoint(addresses=(f"10.1.{i}.{rng.randrange(250)}",)) for _ in range(rng.randrange(3)))
        return EndpointSlice(namespace=f"ns{i % 3}", name=f"s{i}-x", service=f"s{i}", endpoints=eps, ports=())

    for scope in (("Service", ""), ("EndpointSlice", "")):
        store.require(scope)
    for step in range(steps):
        what = rng.random()
        i = rng.randrange(30)
        if what < 0.4:
            store.apply(rng.choice(["ADDED", "MODIFIED"]), "Service", svc(i))
        elif what < 0.7:
            store.apply("MODIFIED", "EndpointSlice", sl(i))
        elif what < 0.85:
            store.apply("DELETED", rng.choice(["Service", "EndpointSlice"]), svc(i) if rng.random() < 0.5 else sl(i))
        else:
            kind = rng.choice(["Service", "EndpointSlice"])
            relist = store.begin_relist((kind, ""))
            picks = rng.sample(range(30), 10)
            relist.page([svc(j) if kind == "Service" else sl(j) for j in picks[:5]])
            relist.page([svc(j) if kind == "Service" else sl(j) for j in picks[5:]])
            relist.finish()
        if step % 17 == 0:
            store.touch_sync()


@pytest.mark.parametrize("seed", range(5))
def test_a_copy_fed_by_the_journal_equals_the_store_after_every_batch(seed):
    rng = random.Random(seed)
    primary, copy = ClusterStore(), ClusterStore()
    batches = []

    def send(batch: list) -> None:
        batches.append(batch)
        apply_ops(copy, batch)
        if batch[-1][0] != "require":
            assert _view(copy) == _view(primary)

    primary.journal = Journal(send)
    _random_writes(primary, rng, 300)
    assert _view(copy) == _view(primary) and copy.synced == primary.synced
    assert len(batches) > 100
    # A late copy: the snapshot, then the journal goes on.
    late = ClusterStore()
    late.require(SNAPSHOT_SCOPE)
    for batch in snapshot_ops(primary):
        assert not late.synced
        apply_ops(late, batch)
    assert late.synced and _view(late) == _view(primary)
    generations = late.generation
    primary.journal = Journal(lambda batch: apply_ops(late, batch))
    _random_writes(primary, rng, 100)
    assert _view(late) == _view(primary) and late.generation > generations


def _svc(ns: str, name: str, ip: str) -> Service:
    return Service(namespace=ns, name=name, type="ClusterIP", cluster_ips=(ip,), ports=())


def test_a_copys_fine_versions_move_with_the_primarys():
    """The answer cache of a worker drops what the primary's drops: same Service, same counter moves."""
    primary, copy = ClusterStore(), ClusterStore()
    primary.journal = Journal(lambda batch: apply_ops(copy, batch))
    primary.require(("Service", ""))
    primary.relist(("Service", ""), [_svc("a", "web", "10.0.0.1")])
    mine, theirs = primary.fine_version("a", "web"), copy.fine_version("a", "web")
    before = theirs()
    primary.apply("MODIFIED", "Service", _svc("a", "web", "10.0.0.2"))
    assert theirs() != before and mine() == theirs()
    unchanged = theirs()
    primary.apply("ADDED", "Service", _svc("b", "other", "10.0.0.3"))
    assert theirs() == unchanged


# ------------------------------------------------------------------ a real twistd with --workers 2

COREFILE = """\
.:0 {{
    bind 127.0.0.1
    log
    ready 127.0.0.1:0
    prometheus 127.0.0.1:0
    kubernetai cluster.local {{
        endpoint {endpoint}
        name east
    }}
}}
"""


def _addresses(port: int, n: int) -> list[str]:
    """``n`` queries, each from a new source port (so the kernel spreads them over the processes)."""
    out = []
    for _ in range(n):
        r = dns.query.udp(
            dns.message.make_query("web.default.svc.cluster.local", "A"), "127.0.0.1", port=port, timeout=3
        )
        out.append(",".join(rr.address for rrset in r.answer for rr in rrset))
    return out


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _ready(port: int) -> bool:
    try:
        _get(port, "/ready")
    except OSError:  # urllib's HTTPError (503) is one
        return False
    return True


def _workers(ready_port: int) -> dict:
    """The primary's /status about its workers."""
    return json.loads(_get(ready_port, "/status"))["workers"]


def _worker_pids(ready_port: int) -> list[int]:
    return [w["pid"] for w in _workers(ready_port)["workers"]]


TTL_COREFILE = ".:0 {{\n bind 127.0.0.1\n ready 127.0.0.1:0\n kubernetai cluster.local {{\n  manifests a.yaml\n  ttl {ttl}\n }}\n}}\n"


def _ttls(port: int) -> set[int]:
    """The TTLs of 20 answers, each from a new source port (so every process is asked)."""
    out = set()
    for _ in range(20):
        q = dns.message.make_query("web.default.svc.cluster.local", "A")
        out.add(dns.query.udp(q, "127.0.0.1", port=port, timeout=3).answer[0].ttl)
    return out


def _kill(pids: list[int]) -> None:
    """Whatever a failed test left running."""
    for p in pids:
        if _alive(p):
            os.kill(p, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(predicate, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_two_workers_share_the_sockets_and_one_watch(tmp_path):
    cluster = FakeCluster()
    cluster.load([namespace("default"), service("web", ip="10.96.0.10"), slice_("web", ["10.1.0.1"])])
    api = listen(cluster)
    path = tmp_path / "Corefile"
    path.write_text(COREFILE.format(endpoint=f"http://127.0.0.1:{api.getHost().port}"))
    server = yield threads.deferToThread(Server, path, "--workers", "2")
    pids: list[int] = []
    try:
        (ready_port,) = [p for name, p in server.http.items()]
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))  # /ready waits for the workers
        status = yield threads.deferToThread(_workers, ready_port)
        pids = [w["pid"] for w in status["workers"]]
        assert status["count"] == 2 and len(pids) == 1 and all(w["ready"] for w in status["workers"])
        answers = yield threads.deferToThread(_addresses, server.port, 60)
        assert set(answers) == {"10.96.0.10"}
        log = server.log()
        by_worker = len(re.findall(r"worker 1: \[kubernetai\.log#info\].*web\.default", log))
        by_primary = len(re.findall(r"\] 127\.0\.0\.1:\d+ - \d+ \"A IN web\.default", log)) - by_worker
        assert by_worker > 0 and by_primary > 0, (by_worker, by_primary)

        # One list+watch per resource, whatever the number of processes.
        watches = [p for p, params, _ in cluster.requests if params.get("watch") in ("1", "true")]
        assert sorted(watches) == sorted(set(watches)), watches

        # A change reaches every process.
        cluster.add(service("web", ip="10.96.0.99"), "MODIFIED")
        moved = yield threads.deferToThread(_wait, lambda: set(_addresses(server.port, 20)) == {"10.96.0.99"}, 10)
        assert moved

        # The primary's /metrics counts the worker's queries too (workers report every second).
        def counted() -> bool:
            text = _get(ready_port, "/metrics")
            total = sum(float(v) for v in re.findall(r"^coredns_dns_requests_total\{[^}]*\} (\S+)$", text, re.M))
            return total >= 80

        assert (yield threads.deferToThread(_wait, counted, 10))

        # A worker that dies comes back, and answers go on meanwhile.
        os.kill(pids[0], signal.SIGKILL)
        yield threads.deferToThread(wait_for_log, server.out, r"worker 1 ended", server.proc, 10)
        yield threads.deferToThread(
            wait_for_log, server.out, rf"worker 1 started \(pid (?!{pids[0]}\))", server.proc, 15
        )
        answers = yield threads.deferToThread(_addresses, server.port, 20)
        assert set(answers) == {"10.96.0.99"}
        status = yield threads.deferToThread(_workers, ready_port)
        pids = [w["pid"] for w in status["workers"]]
        assert status["restarts"] == 1
    finally:
        code = yield threads.deferToThread(server.stop)
        yield api.stopListening()
    assert code in (0, -signal.SIGTERM)
    assert (yield threads.deferToThread(_wait, lambda: not any(_alive(p) for p in pids), 10)), pids
    assert "Traceback" not in server.log()


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_workers_stop_when_the_primary_is_killed(tmp_path):
    (tmp_path / "a.yaml").write_text(CLUSTER_A)
    path = tmp_path / "Corefile"
    path.write_text(
        ".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n kubernetai cluster.local {\n  manifests a.yaml\n }\n}\n"
    )
    server = yield threads.deferToThread(Server, path, "--workers", "3")
    try:
        (ready_port,) = server.http.values()
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))
        pids = yield threads.deferToThread(_worker_pids, ready_port)
        assert len(pids) == 2
        answers = yield threads.deferToThread(_addresses, server.port, 30)
        assert set(answers) == {"10.96.0.10"}
        server.proc.kill()
        server.proc.wait(10)
        assert (yield threads.deferToThread(_wait, lambda: not any(_alive(p) for p in pids), 10)), pids
    finally:
        server.stop()
        _kill(pids)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_a_reload_replaces_every_worker_and_loses_no_answer(tmp_path):
    (tmp_path / "a.yaml").write_text(CLUSTER_A)
    path = tmp_path / "Corefile"
    text = TTL_COREFILE
    path.write_text(text.format(ttl=5))
    server = yield threads.deferToThread(Server, path, "--workers", "2")
    pids: list[int] = []

    try:
        (ready_port,) = server.http.values()
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))
        old = yield threads.deferToThread(_worker_pids, ready_port)
        pids += old
        assert (yield threads.deferToThread(_ttls, server.port)) == {5}
        path.write_text(text.format(ttl=9))
        server.proc.send_signal(signal.SIGUSR1)
        yield threads.deferToThread(wait_for_log, server.out, r"reloaded \(", server.proc, 10)
        # Until the new worker has synced the old one answers (old TTL); then only the new TTL, from both.
        assert (yield threads.deferToThread(_wait, lambda: not any(_alive(p) for p in old), 15))
        assert (yield threads.deferToThread(_ttls, server.port)) == {9}
        new = yield threads.deferToThread(_worker_pids, ready_port)
        pids += new
        assert len(new) == 1 and new != old
        assert "worker 1: [kubernetai.log" not in server.log()  # (no log plugin: nothing relayed but start-up)
    finally:
        yield threads.deferToThread(server.stop)
        _kill(pids)
    assert "Traceback" not in server.log()


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_workers_see_a_cluster_go_stale_as_the_primary_does(tmp_path, clusters):  # noqa: F811
    edge = [("http", "TCP", 80)]
    clusters.add("east", [namespace("default"), service("web", ip="10.96.0.1", ports=edge, external_ips=["192.0.2.1"])])
    clusters.add("west", [namespace("default"), service("web", ip="10.97.0.1", ports=edge, external_ips=["192.0.2.2"])])
    path = tmp_path / "Corefile"
    path.write_text(
        ".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n k8s_external example.com {\n  merge\n  stale 1s\n }\n"
        f" kubernetai cluster.local {{\n  endpoint {clusters.url('east')}\n  fallthrough\n }}\n"
        f" kubernetai cluster.local {{\n  endpoint {clusters.url('west')}\n }}\n}}\n"
    )
    server = yield threads.deferToThread(Server, path, "--workers", "2")
    pids: list[int] = []

    def answers() -> set[str]:
        out = set()
        for _ in range(20):
            q = dns.message.make_query("web.default.example.com", "A")
            r = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
            out.add(",".join(sorted(rr.address for rrset in r.answer for rr in rrset)))
        return out

    try:
        (ready_port,) = server.http.values()
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))
        pids = yield threads.deferToThread(_worker_pids, ready_port)
        assert (yield threads.deferToThread(answers)) == {"192.0.2.1,192.0.2.2"}
        clusters.stop("west")
        # Every process (the kernel spreads the 20 queries over both) leaves west out after 1 s.
        assert (yield threads.deferToThread(_wait, lambda: answers() == {"192.0.2.1"}, 10))
    finally:
        yield threads.deferToThread(server.stop)
        _kill(pids)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_a_restarted_worker_builds_the_running_configuration_not_the_edited_file(tmp_path):
    (tmp_path / "a.yaml").write_text(CLUSTER_A)
    path = tmp_path / "Corefile"
    text = TTL_COREFILE
    path.write_text(text.format(ttl=5))
    server = yield threads.deferToThread(Server, path, "--workers", "2")
    pids: list[int] = []

    try:
        (ready_port,) = server.http.values()
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))
        pids = yield threads.deferToThread(_worker_pids, ready_port)
        path.write_text(text.format(ttl=9).replace("manifests", "nonsense"))  # edited, broken, not reloaded
        os.kill(pids[0], signal.SIGKILL)
        yield threads.deferToThread(wait_for_log, server.out, r"worker 1 ended", server.proc, 10)
        assert (yield threads.deferToThread(_wait, lambda: _ready(ready_port), 15))
        pids += yield threads.deferToThread(_worker_pids, ready_port)
        assert (yield threads.deferToThread(_ttls, server.port)) == {5}
    finally:
        yield threads.deferToThread(server.stop)
        _kill(pids)
    assert "Traceback" not in server.log()


def test_a_worker_that_stops_reading_is_killed_not_buffered_for(monkeypatch):
    import socket as socketlib
    from types import SimpleNamespace

    from kubernetai import workers

    monkeypatch.setattr(workers, "MAX_BACKLOG", 1024 * 1024)
    service_ = SimpleNamespace(adopted_hooks=[], plan=SimpleNamespace(server=SimpleNamespace(clusters=[])))
    pool = workers.WorkerPool(service_, 2, "Corefile", 53, reactor)
    ours, theirs = socketlib.socketpair()  # the worker's end is never read
    signals = []
    w = workers.Worker(1)
    w.process = SimpleNamespace(pid=4242, signalProcess=signals.append)
    w.channel = workers.adopt_channel(reactor, ours, workers.Channel(lambda m: None))
    pool.workers[1] = w
    try:
        for _ in range(20):  # 20 x 256 KiB: past the 1 MiB limit well before the end
            pool._to_all(("ops", "east", [("touch",)] * 1 + [("pad", b"x" * 256 * 1024)]))
        assert signals == ["KILL"] and w.channel is None
    finally:
        theirs.close()


def test_a_replaced_stanza_stops_feeding_the_workers():
    """On a reload the new stanza has the old one's name: the old store must send nothing more."""
    from types import SimpleNamespace

    from kubernetai import workers
    from kubernetai.plugin import Readiness

    def plan(*stanzas):
        return SimpleNamespace(server=SimpleNamespace(clusters=list(stanzas), process_status={}, readiness=Readiness()))

    def stanza():
        return SimpleNamespace(store=ClusterStore(), opts=SimpleNamespace(name=lambda: "east"))

    old, new, kept = stanza(), stanza(), stanza()
    service_ = SimpleNamespace(adopted_hooks=[], plan=plan(old, kept))
    pool = workers.WorkerPool(service_, 2, "Corefile", 53, reactor)
    pool._attach(service_.plan)
    assert old.store.journal is not None and kept.store.journal is not None
    journal = kept.store.journal
    pool._attach(plan(new, kept))
    assert old.store.journal is None and new.store.journal is not None and kept.store.journal is journal
