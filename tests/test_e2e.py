"""End to end: the real `twistd kubernetai` process on loopback, queried with dnspython."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from .twistd import ROOT, TWISTD, Server, env, twistd

pytestmark = pytest.mark.e2e  # real sockets on loopback


@pytest.fixture
def start(tmp_path):
    servers: list[Server] = []

    def _start(text: str, files: dict[str, str] | None = None) -> Server:
        for name, body in (files or {}).items():
            (tmp_path / name).write_text(body)
        core = tmp_path / "Corefile"
        core.write_text(text.replace(":PORT", ":0"))
        s = Server(core)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def query(port: int, name: str, rdtype: str = "A", tcp: bool = False, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=3)


COREFILE = """\
.:PORT {
    bind 127.0.0.1
    errors
    log
    hosts {
        10.1.0.1 web.example.test
        fd00::1 web.example.test
        fallthrough
    }
}
"""


def test_serves_udp_and_tcp_and_logs_like_coredns(start):
    s = start(COREFILE)
    r = query(s.port, "web.example.test")
    assert r.rcode() == 0 and [rr.to_text() for rr in r.answer] == ["web.example.test. 3600 IN A 10.1.0.1"]
    r = query(s.port, "Web.Example.Test", "AAAA", tcp=True)
    assert r.answer[0].name.to_text() == "Web.Example.Test." and r.answer[0][0].address == "fd00::1"
    r = query(s.port, "1.0.1.10.in-addr.arpa", "PTR", use_edns=0)
    assert r.answer[0][0].target.to_text() == "web.example.test." and r.edns == 0
    assert query(s.port, "nothing.example.test").rcode() == dns.rcode.NXDOMAIN
    # twistd shuts down cleanly, then re-raises SIGTERM to exit with its status.
    assert s.stop() in (0, -signal.SIGTERM)
    log = s.log()
    assert "Server Shut Down." in log
    assert '"A IN web.example.test. udp' in log and "NOERROR qr,aa,rd" in log
    assert '"AAAA IN Web.Example.Test. tcp' in log


def test_blocks_sharing_a_port_and_refused(start):
    text = "a.test:PORT {\n bind 127.0.0.1\n hosts {\n  10.0.0.1 x.a.test\n }\n}\nb.test:PORT {\n bind 127.0.0.1\n hosts {\n  10.0.0.2 x.b.test\n }\n}\n"
    s = start(text)
    assert query(s.port, "x.a.test").answer[0][0].address == "10.0.0.1"
    assert query(s.port, "x.b.test", tcp=True).answer[0][0].address == "10.0.0.2"
    assert query(s.port, "x.c.test").rcode() == dns.rcode.REFUSED


def test_import_and_hosts_file(start):
    text = ".:PORT {\n bind 127.0.0.1\n import more.conf\n}\n"
    s = start(text, {"more.conf": "hosts extra.hosts other.test\nlog\n", "extra.hosts": "10.2.0.2 db.other.test\n"})
    assert query(s.port, "db.other.test").answer[0][0].address == "10.2.0.2"


def test_garbage_does_not_hurt_the_server(start):
    import socket

    s = start(COREFILE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for junk in (b"", b"\x00", b"\xff" * 11, os.urandom(64), b"\x12\x34" + b"\x00" * 10 + b"\x05abc"):
            u.sendto(junk, ("127.0.0.1", s.port))
    with socket.create_connection(("127.0.0.1", s.port)) as t:
        t.sendall(b"\x00\x05hello")
        t.settimeout(3)
        assert t.recv(100) == b""  # unreadable message: connection closed
    assert query(s.port, "web.example.test").rcode() == 0


def run_twistd(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    core = tmp_path / "Corefile"
    core.write_text(text)
    return subprocess.run(
        twistd("--config", str(core), *extra, cwd=tmp_path),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_corefile_exits_nonzero_naming_file_and_line(tmp_path):
    p = run_twistd(tmp_path, ".:1053 {\n  log\n  kubernetai cluster.local {\n    fallthrough\n    nonsense 1\n  }\n}\n")
    assert p.returncode != 0
    assert f"{tmp_path / 'Corefile'}:5: nonsense" in p.stderr


def test_check_prints_the_plan(tmp_path):
    p = run_twistd(
        tmp_path,
        ".:1053 10.0.0.0/24:1053 {\n bind 127.0.0.1\n log\n errors\n kubernetai cluster.local {\n  endpoint http://127.0.0.1:8001\n  fallthrough\n }\n}\n",
        "--check",
    )
    assert p.returncode == 0, p.stderr
    assert "zones:   . 0.0.10.in-addr.arpa." in p.stdout
    assert "port:    1053 udp+tcp on 127.0.0.1" in p.stdout
    assert "plugins: bind -> errors -> log -> kubernetai" in p.stdout


def test_dns_port_option_applies_to_keys_without_port(tmp_path):
    p = run_twistd(tmp_path, ". {\n log\n}\nexample.org:53 {\n log\n}\n", "--check", "--dns-port", "5300")
    assert "port:    5300" in p.stdout and "port:    53 " in p.stdout


def test_busy_port_exits_nonzero_with_a_clear_message(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        p = run_twistd(tmp_path, f".:{port} {{\n bind 127.0.0.1\n log\n}}\n")
    assert p.returncode != 0
    assert f"cannot listen on 127.0.0.1 port {port}" in p.stderr + p.stdout


def test_busy_health_port_exits_before_serving_with_one_line(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = run_twistd(tmp_path, f".:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{port}\n}}\n")
    assert p.returncode == 1
    out = p.stderr + p.stdout
    assert out.count(f"kubernetai: cannot listen on 127.0.0.1 port {port} (HTTP)") == 1
    assert "Traceback" not in out and "Main loop" not in out  # exits before the reactor runs: nothing served


def test_help_lists_the_options(tmp_path):
    p = subprocess.run([*TWISTD, "kubernetai", "--help"], env=env(), capture_output=True, text=True, timeout=60)
    for opt in ("--config", "--dns-port", "--check"):
        assert opt in p.stdout


def test_the_demo_corefile_answers_the_readme_examples(start, tmp_path):
    import shutil

    shutil.copytree(ROOT / "etc" / "demo", tmp_path, dirs_exist_ok=True)
    demo = (ROOT / "etc" / "demo" / "Corefile").read_text()
    # health and ready on one OS-picked port (they share a listener, as they would on one address)
    text = (
        demo.replace(".:1053", ".:PORT")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8181", "127.0.0.1:0")
    )
    s = start(text)
    rp = s.http["http 127.0.0.1:0"]
    # The three commands `make demo` prints (see Makefile and README.rst).
    r = query(s.port, "web.default.svc.cluster.local")  # from east
    assert [rr.address for rr in r.answer[0]] == ["10.96.0.10"]
    r = query(s.port, "ledger.payments.svc.cluster.local", tcp=True)  # only in west: fell through
    assert [rr.address for rr in r.answer[0]] == ["10.245.1.5"]
    r = query(s.port, "api.default.svc.cluster.local")  # east has no ready endpoint: west answers
    assert sorted(rr.address for rr in r.answer[0]) == ["10.245.0.30", "10.245.0.31"]
    r = query(s.port, "web.default.svc.cluster.local", "AAAA", tcp=True)
    assert [rr.address for rr in r.answer[0]] == ["fd00:10:96::10"]
    assert query(s.port, "nothing.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{rp}/ready", timeout=5) as resp:
        assert resp.status == 200


def test_example_corefile_is_valid(tmp_path):
    p = subprocess.run(
        twistd("--config", str(ROOT / "etc" / "Corefile.example"), "--check", cwd=tmp_path),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr


def test_multicluster_example_parses_with_valid_options():
    from kubernetai.cluster.options import parse_options
    from kubernetai.corefile import parse_file
    from kubernetai.directives import registry

    blocks = parse_file(str(ROOT / "etc" / "Corefile.multicluster"), registry().__contains__, {})
    stanzas = [parse_options(d, (".",)) for d in blocks[0].directives if d.name == "kubernetai"]
    assert [s.zones for s in stanzas] == [
        ("cluster.local.", "96.10.in-addr.arpa."),
        ("cluster.local.", "100.10.in-addr.arpa."),
        ("staging.local.",),
    ]
    assert stanzas[0].ignore_empty_service and stanzas[0].fallthrough.zones == (".",)
    assert stanzas[1].context == "west" and stanzas[2].tls[2].endswith("staging-ca.crt")
