"""What start-up pays for (issue 15: first answer within 0.3 s): the collector's pace, and modules only some need."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from twisted.internet import task

from kubernetai import startup_gc
from kubernetai.build import KubernetaiService, load_text

ROOT = Path(__file__).resolve().parent.parent


def test_relax_and_restore():
    startup_gc.restore()  # importing kubernetai.tap (another test) relaxed it until a first sync
    before = gc.get_threshold()
    try:
        startup_gc.relax()
        assert gc.get_threshold()[0] == max(startup_gc.STARTUP_THRESHOLD, before[0])
        startup_gc.relax()  # twice: still restores the first thresholds
        startup_gc.restore()
        assert gc.get_threshold() == before
        startup_gc.restore()  # a no-op
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


def test_the_first_sync_restores_the_threshold(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    clock = task.Clock()
    plan = load_text(
        f".:0 {{\n bind 127.0.0.1\n kubernetai cluster.local {{\n  manifests {tmp_path}/c.yaml\n }}\n}}", 53, clock
    )
    before = gc.get_threshold()
    svc = KubernetaiService(plan, clock)
    try:
        startup_gc.relax()
        svc._release([True], list(plan.server.startup))
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        startup_gc.restore()


def test_a_server_with_nothing_to_sync_restores_it_at_start():
    from twisted.internet import reactor

    plan = load_text(".:0 {\n bind 127.0.0.1\n whoami\n}", 53, reactor)
    before = gc.get_threshold()
    svc = KubernetaiService(plan, reactor)
    try:
        startup_gc.relax()
        svc.startService()
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        startup_gc.restore()
        svc.stopService()


def test_an_api_stanza_loads_without_yaml_and_a_manifests_stanza_without_kubeconfig(tmp_path):
    """PyYAML (~15 ms to import) only for YAML manifests or a kubeconfig; TLS and credentials only for the API."""
    (tmp_path / "c.json").write_text("")
    code = f"""
import sys
from twisted.internet import reactor
from kubernetai.build import load_text
load_text(".:0 {{\\n kubernetai cluster.local {{\\n  endpoint http://127.0.0.1:1\\n }}\\n}}", 53, reactor)
api = "yaml" in sys.modules
load_text(".:0 {{\\n kubernetai cluster.local {{\\n  manifests {tmp_path}/c.json\\n }}\\n}}", 53, reactor)
print(api, "yaml" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    ).stdout
    assert out.split() == ["False", "False"]
    code = f"""
import sys
from twisted.internet import reactor
from kubernetai.build import load_text
load_text(".:0 {{\\n kubernetai cluster.local {{\\n  manifests {tmp_path}/c.json\\n }}\\n}}", 53, reactor)
print("kubernetai.cluster.kubeconfig" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    ).stdout
    assert out.split() == ["False"]


def test_lazy_repr_writes_what_attrs_would():
    """Classes whose repr is made on first use (kubernetai.lazy_repr) read as attrs' own, secrets left out."""
    import attrs

    from kubernetai.lazy_repr import LazyRepr

    def fields(cls):
        cls.__annotations__ = {"a": "int", "b": "str", "token": "bytes", "_hidden": "tuple", "n": "int"}
        cls.b, cls._hidden = "x", ()
        cls.token = attrs.field(default=b"s3cret", repr=False)
        cls.n = attrs.field(default=3, repr=lambda v: f"<{v}>")
        return cls

    @attrs.define
    @fields
    class Eager:
        pass

    @attrs.frozen(repr=False)
    @fields
    class Lazy(LazyRepr):
        pass

    assert repr(Lazy(1)) == repr(Eager(1)).replace("Eager(", "Lazy(") == "Lazy(a=1, b='x', _hidden=(), n=<3>)"
    assert not hasattr(Lazy(1), "__dict__")  # still slotted
