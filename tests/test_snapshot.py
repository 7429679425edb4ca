"""Snapshot clusters: manifests on disk feeding a stanza's store."""

from __future__ import annotations

import json
import os
import re
import time

import dns.message
import dns.query
import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, reactor, task, threads
from twisted.logger import Logger, formatEvent

from kubernetai.build import KubernetaiService, load_text
from kubernetai.cluster import snapshot
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.snapshot import ManifestError, ManifestSource, expand, read_documents
from kubernetai.cluster.store import ClusterStore
from kubernetai.corefile import CorefileError

from .fakeapi import namespace, pod, service, slice_


def write_yaml(path, *docs):
    path.write_text(yaml.safe_dump_all(list(docs)))


def names(store, kind="Service"):
    return sorted(f"{ns}/{n}" for ns, n in store.objects[kind])


class Rig:
    def __init__(self, tmp_path, **opts):
        self.clock = task.Clock()
        self.store = ClusterStore(clock=self.clock.seconds)
        self.opts = KubernetesOptions(zones=("cluster.local.",), manifests=(str(tmp_path),), **opts)
        self.events = []
        self.parsed = []  # what the worker was given, each time

        def parse_in(f, paths, *args):  # the worker thread, run at once: deterministic
            self.parsed.append(list(paths))
            return defer.maybeDeferred(f, paths, *args)

        self.source = ManifestSource(
            (str(tmp_path),), self.opts, self.store, self.clock, cluster="test", parse_in=parse_in
        )

    def start(self, monkeypatch):
        monkeypatch.setattr(snapshot, "log", Logger(observer=self.events.append))
        self.source.startService()
        return self

    def tick(self):
        self.clock.advance(self.source.poll_interval)

    def logged(self):
        return [formatEvent(e) for e in self.events]


def test_document_shapes(tmp_path):
    # kubectl's v1 List, a typed List whose items lack kind, multi-document YAML, JSON object and JSON List.
    write_yaml(tmp_path / "a.yaml", {"apiVersion": "v1", "kind": "List", "items": [service("a"), namespace("default")]})
    write_yaml(
        tmp_path / "b.yml",
        {"apiVersion": "v1", "kind": "ServiceList", "items": [{k: v for k, v in service("b").items() if k != "kind"}]},
    )
    write_yaml(tmp_path / "c.yaml", service("c"), None, slice_("c", ["10.0.0.3"]))
    (tmp_path / "d.json").write_text(json.dumps(service("d")))
    (tmp_path / "e.json").write_text(json.dumps({"kind": "List", "items": [service("e")]}))
    (tmp_path / "notes.txt").write_text("ignored: not a manifest suffix")
    files = expand([str(tmp_path)])
    assert [os.path.basename(f) for f in files] == ["a.yaml", "b.yml", "c.yaml", "d.json", "e.json"]
    kinds = sorted((o["kind"], o["metadata"]["name"]) for f in files for o in read_documents(f))
    assert kinds == [("EndpointSlice", "c-abcde"), ("Namespace", "default")] + [("Service", n) for n in "abcde"]


@pytest.mark.parametrize(
    "name,text,where",
    [
        ("bad.yaml", "a: b\n  c: d\n", "bad.yaml:2:4"),
        ("bad.json", '{"kind": "Service",\n "metadata": }', "bad.json:2:14"),
    ],
)
def test_malformed_file_names_file_and_position(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError) as e:
        read_documents(str(tmp_path / name))
    assert where in str(e.value)


def test_globs_and_files(tmp_path):
    (tmp_path / "x").mkdir()
    write_yaml(tmp_path / "x" / "one.yaml", service("one"))
    write_yaml(tmp_path / "two.yaml", service("two"))
    assert [os.path.basename(p) for p in expand([str(tmp_path / "x" / "*.yaml"), str(tmp_path / "two.yaml")])] == [
        "one.yaml",
        "two.yaml",
    ]


def test_initial_read_syncs_and_filters(tmp_path, monkeypatch):
    write_yaml(
        tmp_path / "c.yaml",
        namespace("default"),
        service("a"),
        slice_("a", ["10.0.0.1"]),
        pod("p", "10.0.0.9"),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "default"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "y", "namespace": "default"}},
    )
    r = Rig(tmp_path).start(monkeypatch)
    assert r.store.synced
    assert names(r.store) == ["default/a"] and names(r.store, "EndpointSlice") == ["default/a-abcde"]
    assert names(r.store, "Pod") == []  # pods only with `pods verified`, as from an API server
    assert sum("ignoring objects of kind 'Deployment'" in t for t in r.logged()) == 1  # once per kind


def test_changes_on_disk_are_applied_as_diffs(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    write_yaml(f, namespace("default"), service("a"), service("b", ip="10.96.0.11"))
    other = tmp_path / "other.yaml"
    write_yaml(other, service("o", ip="10.96.0.99"))
    r = Rig(tmp_path).start(monkeypatch)
    gen = r.store.generation
    write_yaml(
        f, namespace("default"), service("a", ip="10.96.0.50"), service("c", ip="10.96.0.12")
    )  # modify a, delete b, add c
    r.tick()
    assert names(r.store) == ["default/a", "default/c", "default/o"]
    assert r.store.service("default", "a").cluster_ips == ("10.96.0.50",)
    assert r.store.generation > gen
    os.unlink(other)  # a removed file's objects go
    r.tick()
    assert names(r.store) == ["default/a", "default/c"]


def test_broken_file_keeps_last_good_contents_until_fixed(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    write_yaml(f, namespace("default"), service("a"))
    r = Rig(tmp_path).start(monkeypatch)
    f.write_text("kind: Service\nmetadata: [unclosed\n")
    r.tick()
    assert names(r.store) == ["default/a"]
    errors = [t for t in r.logged() if "keeping its last good contents" in t]
    assert len(errors) == 1 and "c.yaml:" in errors[0]
    r.tick()
    assert len([t for t in r.logged() if "keeping its last good contents" in t]) == 1  # reported once
    write_yaml(f, namespace("default"), service("b"))
    r.tick()
    assert names(r.store) == ["default/b"]
    assert any("reads again" in t for t in r.logged())


def test_options_filter_like_the_api_server(tmp_path, monkeypatch):
    write_yaml(
        tmp_path / "c.yaml",
        namespace("default"),
        namespace("other"),
        service("a", labels={"app": "x"}),
        service("b", labels={"app": "y"}),
        service("c", ns="other", labels={"app": "x"}),
        {**pod("p", "10.0.0.9"), "metadata": {"name": "p", "namespace": "default", "labels": {"app": "x"}}},
        pod("unlabelled", "10.0.0.8"),
        {**pod("ended", "10.0.0.7"), "metadata": {"name": "ended", "namespace": "default", "labels": {"app": "x"}},
         "status": {"phase": "Succeeded", "podIP": "10.0.0.7"}},
    )  # fmt: skip
    from kubernetai.cluster.selectors import parse_selector

    r = Rig(tmp_path, namespaces=("default",), labels=parse_selector("app=x"), pods="verified").start(monkeypatch)
    assert names(r.store) == ["default/a"]
    # As CoreDNS's pod informer: `labels` applies to Pods too, and ended pods are left out.
    assert names(r.store, "Pod") == ["default/p"]


def test_manifests_cannot_be_combined_with_an_api_server():
    with pytest.raises(CorefileError, match="manifests cannot be combined with endpoint"):
        load_text(
            ". {\n kubernetai cluster.local {\n  manifests x.yaml\n  endpoint http://127.0.0.1:1\n }\n}",
            53,
            task.Clock(),
        )


def ask(port, name, rdtype="A", tcp=False):
    q = dns.message.make_query(name, rdtype)
    return threads.deferToThread(dns.query.tcp if tcp else dns.query.udp, q, "127.0.0.1", port=port, timeout=3)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_a_service_added_to_a_file_resolves_within_a_second(tmp_path):
    f = tmp_path / "cluster.yaml"
    write_yaml(f, namespace("default"), service("a"))
    svc = KubernetaiService(
        load_text(
            f".:0 {{\n bind 127.0.0.1\n kubernetai cluster.local {{\n  manifests {tmp_path}\n }}\n}}", 53, reactor
        ),
        reactor,
    )
    svc.startService()
    try:
        ((_, port),) = svc.addresses()
        r = yield ask(port, "a.default.svc.cluster.local")
        assert r.answer[0][0].address == "10.96.0.10"
        write_yaml(f, namespace("default"), service("b", ip="10.96.0.77"))
        start = time.monotonic()
        while True:
            r = yield ask(port, "b.default.svc.cluster.local")
            if r.answer:
                break
            assert time.monotonic() - start < 1.0, "not picked up within a second"
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert r.answer[0][0].address == "10.96.0.77"
        r = yield ask(port, "a.default.svc.cluster.local", tcp=True)
        assert r.rcode() == 3  # removed from the file: gone
    finally:
        yield svc.stopService()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Issue 12, item 12: 744 bytes that expand to billions of nodes when walked."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    lines.append("kind: Service")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert len(bomb.read_bytes()) < 1024
    with pytest.raises(ManifestError, match="YAML aliases"):
        read_documents(str(bomb))


def test_label_values_must_be_strings(tmp_path):
    from kubernetai.cluster import kinds
    from kubernetai.cluster.objects import ObjectError
    from kubernetai.cluster.options import KubernetesOptions

    obj = service("a", labels={"app": ["not", "a", "string"]})
    with pytest.raises(ObjectError):
        kinds.selected(KubernetesOptions(zones=("cluster.local.",)), kinds.KINDS["Service"], obj)


def test_a_manifests_path_that_matches_nothing_fails_the_check(tmp_path):
    for arg in ("typo.yaml", "missing-dir/", "nothing-*.yaml"):
        with pytest.raises(CorefileError, match=f"manifests: {re.escape(arg)} matches no file or directory"):
            load_text(f". {{\n kubernetai cluster.local {{\n  manifests {arg}\n }}\n}}", 53, None,
                      file=str(tmp_path / "Corefile"))  # fmt: skip


def test_a_path_that_matched_and_now_matches_nothing_keeps_the_last_good_contents(tmp_path, monkeypatch):
    d = tmp_path / "cluster"
    d.mkdir()
    write_yaml(d / "c.yaml", namespace("default"), service("a"))
    r = Rig(d).start(monkeypatch)
    assert names(r.store) == ["default/a"]
    (d / "c.yaml").unlink()
    d.rmdir()  # the directory is gone (an unmounted volume, a wrong deploy)
    r.tick()
    assert names(r.store) == ["default/a"]
    errors = [t for t in r.logged() if "matches no file any more; keeping its last good contents" in t]
    assert len(errors) == 1
    r.tick()
    assert len([t for t in r.logged() if "matches no file any more" in t]) == 1  # said once
    d.mkdir()
    write_yaml(d / "c.yaml", namespace("default"), service("b"))
    r.tick()
    assert names(r.store) == ["default/b"]


def test_files_are_parsed_off_the_reactor_and_a_touch_parses_nothing(tmp_path, monkeypatch):
    """Issue 12, item 11: a 100 MB file stopped DNS for ~30 s, again on a mere touch."""
    import os

    f = tmp_path / "c.yaml"
    write_yaml(f, namespace("default"), service("a"))
    r = Rig(tmp_path).start(monkeypatch)
    assert r.parsed == [[str(f)]] and names(r.store) == ["default/a"]
    generation = r.store.generation
    os.utime(f, ns=(1, 1))  # a touch: new mtime, same bytes
    r.tick()
    assert r.store.generation == generation  # read again (in the worker), not re-applied
    write_yaml(f, namespace("default"), service("b"))
    r.tick()
    assert names(r.store) == ["default/b"]


def test_a_file_over_the_size_limit_is_an_error_that_keeps_the_last_good_contents(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    write_yaml(f, namespace("default"), service("a"))
    r = Rig(tmp_path).start(monkeypatch)
    monkeypatch.setattr(snapshot, "MAX_MANIFEST", 100)
    write_yaml(f, namespace("default"), service("a"), service("b"), service("c"))
    r.tick()
    assert names(r.store) == ["default/a"]
    assert any("larger than" in t and "keeping its last good contents" in t for t in r.logged())


def test_large_manifests_are_parsed_in_a_child_process(tmp_path, monkeypatch):
    """Issue 15: the parser's garbage stays in a child (RSS after a 10,000-Service manifest: 213 -> 68 MB)."""
    import subprocess

    from kubernetai.cluster import snapshot
    from kubernetai.cluster.options import KubernetesOptions

    path = tmp_path / "c.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\n"
        "spec: {type: ClusterIP, clusterIP: 10.96.0.1, ports: [{port: 80, protocol: TCP}]}\n"
    )
    opts = KubernetesOptions(zones=("cluster.local.",))
    here = snapshot._read_files([str(path)], {}, opts)
    runs = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: runs.append(a) or real_run(*a, **kw))
    monkeypatch.setattr(snapshot, "PROCESS_PARSE_BYTES", 0)  # every file is "large"
    there = snapshot.read_manifests([str(path)], {}, opts)
    assert runs and "kubernetai.cluster.parse_child" in runs[0][0]
    assert there == here and [k for k, _ in there[str(path)].objects] == ["Namespace", "Service"]
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: (_ for _ in ()).throw(OSError("no processes left")))
    assert snapshot.read_manifests([str(path)], {}, opts) == here  # no child: parsed here
