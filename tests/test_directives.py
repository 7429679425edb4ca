"""Third-party directives through the entry-point group, using README.rst's own example."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dns.message
from twisted.internet import task

from kubernetai.build import load_text
from kubernetai.corefile import CorefileError
from kubernetai.directives import ENTRY_POINT_GROUP, registry
from kubernetai.server import KubeDNSServerFactory

from .conftest import result

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (ROOT / "README.rst").read_text()
    block = text.split("# mypkg/static.py", 1)[1].split("# setup.py / pyproject.toml of mypkg", 1)[0]
    return re.sub(r"^    ", "", block, flags=re.M)


def install_fake_dist(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "static.py").write_text(readme_example())
    dist = tmp_path / "mypkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nstatic = mypkg.static:setup\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypkg", raising=False)


def test_readme_example_registers_and_answers(tmp_path, monkeypatch):
    install_fake_dist(tmp_path, monkeypatch)
    assert "static" in registry()
    plan = load_text(
        ". {\n forward . 127.0.0.1\n static 192.0.2.7\n kubernetai cluster.local {\n  endpoint http://127.0.0.1:1\n }\n}",
        53,
        task.Clock(),
    )
    assert plan.blocks[0].plugins == ("kubernetai", "static", "forward")
    f = KubeDNSServerFactory(blocks=[plan.blocks[0].block])
    out = result(f.handle_packet(dns.message.make_query("static.example", "A").to_wire(), ("127.0.0.1", 1), "udp"))
    assert dns.message.from_wire(out).answer[0][0].address == "192.0.2.7"


def test_unknown_directive_without_the_package(tmp_path):
    try:
        load_text(". {\n static 192.0.2.7\n}", 53, task.Clock())
    except CorefileError as e:
        assert "unknown directive 'static'" in str(e)
    else:
        raise AssertionError("static should be unknown")


def test_a_corefile_of_built_in_directives_does_not_read_installed_packages(monkeypatch):
    """Listing the entry points reads every distribution's metadata (~20 ms of a 0.3 s start): only for unknown names."""
    from kubernetai.directives import Directives

    scans = []
    real = Directives._scan
    monkeypatch.setattr(Directives, "_scan", lambda self: (self._scanned or scans.append(1), real(self)))
    load_text(". {\n errors\n cache 30\n forward . 127.0.0.1\n}", 53, task.Clock())
    assert scans == []
    try:
        load_text(". {\n erors\n}", 53, task.Clock())
    except CorefileError as e:
        assert "did you mean 'errors'" in str(e)  # a mistake still lists them all, once
    assert scans == [1]
