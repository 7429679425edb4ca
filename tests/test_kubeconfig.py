"""Connections: kubeconfig contexts (client cert, token, token file, exec plugin), endpoint+tls, in-cluster.

The https cases run against the fake API server over real TLS on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import stat
import sys

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher

from kubernetai.cluster import kubeconfig
from kubernetai.cluster.kubeconfig import ConfigError, ExecAuth, TokenFileAuth, connection_for
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.stanza import KubernetesCluster
from kubernetai.cluster.watch import Watcher

from .certs import CA, server_context
from .fakeapi import FakeCluster, listen, namespace, service


@pytest.fixture(scope="module")
def pki():
    ca = CA()
    return {
        "ca": ca,
        "server": ca.issue("apiserver", ips=["127.0.0.1"], dns_names=["localhost"]),
        "client": ca.issue("kubernetai", client=True),
    }


@pytest.fixture
def api(pki):
    """An https fake API on 127.0.0.1; yields (cluster, port, start(require_client))."""
    ports = []
    cluster = FakeCluster()
    cluster.load([namespace("default"), service("web")])

    def start(require_client=True, server=None):
        p = listen(cluster, context_factory=server_context(pki["ca"], server or pki["server"], require_client))
        ports.append(p)
        return p.getHost().port

    yield cluster, start
    for p in ports:
        p.stopListening()
    cluster.drop_watches()


def kubeconfig_file(tmp_path, server, user, cluster_extra=None, name="ctx", ca_pem=None):
    """A kubeconfig whose cluster trusts ca.crt beside it (written from ``ca_pem``)."""
    if ca_pem is not None:
        (tmp_path / "ca.crt").write_bytes(ca_pem)
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority": "ca.crt", **(cluster_extra or {})}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "c", "user": "nobody"}},
        ],
        "current-context": "other",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@defer.inlineCallbacks
def synced_stanza(opts):
    conn = connection_for(opts, reactor)
    stanza = KubernetesCluster.from_api(opts, conn, reactor)
    stanza.startService()
    try:
        ok = yield stanza.wait_synced(reactor)
    finally:
        yield stanza.stopService()
    return ok, stanza


def opts(**kw):
    kw.setdefault("startup_timeout", 5.0)
    return KubernetesOptions(zones=("cluster.local.",), **kw)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_kubeconfig_client_certificate_inline_data(tmp_path, pki, api, monkeypatch):
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    cluster, start = api
    port = start(require_client=True)
    user = {
        "client-certificate-data": base64.b64encode(pki["client"].cert).decode(),
        "client-key-data": base64.b64encode(pki["client"].key).decode(),
    }
    path = kubeconfig_file(tmp_path, f"https://127.0.0.1:{port}", user, ca_pem=pki["ca"].pem)
    ok, stanza = yield synced_stanza(opts(kubeconfig=path, context="ctx"))
    assert ok and stanza.store.service("default", "web") is not None
    assert stanza.connection.name == f"kubeconfig {path} context ctx"
    # Issue 12, item 17: the inline key stays in memory; nothing is written to a temporary file.
    assert list(temp.iterdir()) == []
    assert stanza.connection.tls.key_data == pki["client"].key


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_kubeconfig_token(tmp_path, pki, api):
    cluster, start = api
    cluster.token = "s3cret-token"
    port = start(require_client=False)
    path = kubeconfig_file(tmp_path, f"https://127.0.0.1:{port}", {"token": "s3cret-token"}, ca_pem=pki["ca"].pem)
    ok, stanza = yield synced_stanza(opts(kubeconfig=path, context="ctx"))
    assert ok
    assert {h.get("authorization") for _, _, h in cluster.requests} == {"Bearer s3cret-token"}
    assert "s3cret" not in repr(stanza.connection)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_kubeconfig_token_file_rotation_after_401(tmp_path, pki, api):
    cluster, start = api
    cluster.token = "first"
    port = start(require_client=False)
    token = tmp_path / "token"
    token.write_text("first\n")
    path = kubeconfig_file(tmp_path, f"https://127.0.0.1:{port}", {"tokenFile": "token"}, ca_pem=pki["ca"].pem)
    conn = connection_for(opts(kubeconfig=path, context="ctx"), reactor)
    assert (yield conn.auth.header()) == b"Bearer first"
    # Rotation: the server now wants the new token; the file changes the same second.
    token.write_text("second\n")
    cluster.token = "second"
    ok, _ = yield synced_stanza(opts(kubeconfig=path, context="ctx"))
    assert ok


def test_token_file_reread_on_clock(tmp_path):
    clock = task.Clock()
    token = tmp_path / "token"
    token.write_text("a")
    auth = TokenFileAuth(str(token), clock.seconds)
    assert auth.header().result == b"Bearer a"
    st = os.stat(token)
    token.write_text("b")
    os.utime(token, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime and size: only the clock tells
    assert auth.header().result == b"Bearer a"
    clock.advance(kubeconfig.TOKEN_REREAD)
    assert auth.header().result == b"Bearer b"
    auth.invalidate()
    token.unlink()
    failure = auth.header().result  # nothing read yet and no file: a clear error
    assert isinstance(failure.value, ConfigError) and "cannot read token file" in str(failure.value)


def test_token_file_vanishing_keeps_last_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("a")
    auth = TokenFileAuth(str(token))
    assert auth.header().result == b"Bearer a"
    token.unlink()
    assert auth.header().result == b"Bearer a"


def exec_plugin(tmp_path, token_lines: str, expiry_seconds: int | None) -> str:
    script = tmp_path / "cred-plugin"
    counter = tmp_path / "runs"
    expiry = ""
    if expiry_seconds is not None:
        expiry = (
            "import datetime\n"
            f"status['expirationTimestamp'] = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds={expiry_seconds})).strftime('%Y-%m-%dT%H:%M:%SZ')\n"
        )
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"runs = {str(counter)!r}\n"
        "n = int(open(runs).read()) + 1 if os.path.exists(runs) else 1\n"
        "open(runs, 'w').write(str(n))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential' and info['spec']['interactive'] is False\n"
        f"status = {{'token': {token_lines!r} + os.environ.get('EXTRA', '')}}\n"
        + expiry
        + "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential', 'status': status}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(counter)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_kubeconfig_exec_plugin(tmp_path, pki, api):
    cluster, start = api
    cluster.token = "from-exec-x"
    port = start(require_client=False)
    runs = exec_plugin(tmp_path, "from-exec", expiry_seconds=3600)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "./cred-plugin",
            "env": [{"name": "EXTRA", "value": "-x"}],
            "interactiveMode": "Never",
        }
    }
    path = kubeconfig_file(tmp_path, f"https://127.0.0.1:{port}", user, ca_pem=pki["ca"].pem)
    ok, _ = yield synced_stanza(opts(kubeconfig=path, context="ctx"))
    assert ok
    assert open(runs).read() == "1"  # cached until shortly before it expires


@pytest_twisted.inlineCallbacks
def test_exec_plugin_refreshes_before_expiry(tmp_path):
    runs = exec_plugin(tmp_path, "t", expiry_seconds=30)  # inside the 60 s refresh margin
    auth = ExecAuth({"command": "./cred-plugin"}, str(tmp_path), reactor)
    assert (yield auth.header()) == b"Bearer t"
    assert (yield auth.header()) == b"Bearer t"
    assert open(runs).read() == "2"


@pytest_twisted.inlineCallbacks
def test_exec_plugin_failure_is_a_clear_error(tmp_path):
    script = tmp_path / "bad-plugin"
    script.write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    script.chmod(0o755)
    auth = ExecAuth({"command": str(script)}, str(tmp_path), reactor)
    with pytest.raises(ConfigError, match="exited with status 3"):
        yield auth.header()


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_endpoint_with_tls_files(tmp_path, pki, api):
    cluster, start = api
    port = start(require_client=True)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki["ca"].pem)
    cert, key = pki["client"].write(tmp_path, "client")
    ok, _ = yield synced_stanza(opts(endpoint=f"https://127.0.0.1:{port}", tls=(str(cert), str(key), str(ca))))
    assert ok


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_certificate_without_the_ip_is_refused(tmp_path, pki, api):
    cluster, start = api
    wrong = pki["ca"].issue("apiserver", dns_names=["kubernetes.default"])  # no IP SAN for 127.0.0.1
    port = start(require_client=False, server=wrong)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki["ca"].pem)
    ok, stanza = yield synced_stanza(
        opts(endpoint=f"https://127.0.0.1:{port}", tls=("", "", str(ca)), startup_timeout=1.5)
    )
    assert not ok and cluster.requests == []
    states = {w.state for w in stanza if isinstance(w, Watcher)}
    assert all(s.startswith("TLS with the API server failed:") for s in states), states  # not "connection lost"


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_unknown_ca_is_refused(tmp_path, pki, api):
    cluster, start = api
    port = start(require_client=False)
    other = tmp_path / "other-ca.crt"
    other.write_bytes(CA("someone-else").pem)
    ok, stanza = yield synced_stanza(
        opts(endpoint=f"https://127.0.0.1:{port}", tls=("", "", str(other)), startup_timeout=1.5)
    )
    assert not ok and cluster.requests == []
    states = {w.state for w in stanza if isinstance(w, Watcher)}
    assert all("TLS with the API server failed: certificate verify failed" in s for s in states), states


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_credentials_never_reach_the_log(tmp_path, pki, api):
    cluster, start = api
    cluster.token = "the-right-one"
    port = start(require_client=False)
    path = kubeconfig_file(
        tmp_path, f"https://127.0.0.1:{port}", {"token": "TOPSECRET-token-value"}, ca_pem=pki["ca"].pem
    )
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        ok, _ = yield synced_stanza(opts(kubeconfig=path, context="ctx", startup_timeout=1.5))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not ok
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "401" in text and "TOPSECRET" not in text


def test_insecure_skip_tls_verify_is_refused(tmp_path, pki):
    path = kubeconfig_file(
        tmp_path, "https://127.0.0.1:6443", {"token": "x"}, {"insecure-skip-tls-verify": True}, ca_pem=pki["ca"].pem
    )
    with pytest.raises(ConfigError, match="insecure-skip-tls-verify"):
        connection_for(opts(kubeconfig=path, context="ctx"), reactor)


def test_missing_kubeconfig_and_unknown_context(tmp_path, pki):
    with pytest.raises(ConfigError, match="does not exist"):
        connection_for(opts(kubeconfig=str(tmp_path / "nope")), reactor)
    path = kubeconfig_file(tmp_path, "https://127.0.0.1:6443", {"token": "x"}, ca_pem=pki["ca"].pem)
    with pytest.raises(ConfigError, match="missing"):
        connection_for(opts(kubeconfig=path, context="nosuchcontext"), reactor)


def test_in_cluster(tmp_path, monkeypatch):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok")
    (sa / "ca.crt").write_bytes(CA().pem)  # a real PEM: the file is checked at start
    monkeypatch.setattr(kubeconfig, "SERVICEACCOUNT_DIR", str(sa))
    conn = connection_for(opts(), reactor, {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert conn.base_url == "https://10.96.0.1:443" and conn.name == "in-cluster"
    assert conn.tls.ca_file == str(sa / "ca.crt")
    conn6 = connection_for(opts(), reactor, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert conn6.base_url == "https://[fd00::1]:443"
    with pytest.raises(ConfigError, match="not running in a cluster"):
        connection_for(opts(), reactor, {})


def test_bad_endpoint_scheme():
    with pytest.raises(ConfigError, match="must start with http"):
        connection_for(opts(endpoint="ftp://x"), reactor)


def test_tls_policy_rereads_rotated_files(tmp_path, pki):
    from kubernetai.cluster.kubeconfig import ClusterTLSPolicy, TLSFiles

    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki["ca"].pem)
    cert, key = pki["client"].write(tmp_path, "client")
    policy = ClusterTLSPolicy(TLSFiles(str(ca), str(cert), str(key)))
    policy.creatorForNetloc(b"127.0.0.1", 6443)
    first = {p: v[0] for p, v in policy._cache.items()}
    other = pki["ca"].issue("kubernetai-rotated", client=True)
    other.write(tmp_path, "client")
    ca.write_bytes(CA("rotated-ca").pem + pki["ca"].pem)
    policy.creatorForNetloc(b"127.0.0.1", 6443)
    assert all(policy._cache[p][0] != first[p] for p in first)  # every file re-read


def test_tls_files_that_are_empty_or_not_pem_fail_the_check_naming_the_file(tmp_path, pki):
    """Issue 12, item 15."""
    from kubernetai.build import load_text
    from kubernetai.corefile import CorefileError

    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki["ca"].pem)
    cert, key = pki["ca"].issue("client", client=True).write(tmp_path, "client")
    empty = tmp_path / "empty.crt"
    empty.write_text("")
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    for files, wanted in (
        ((empty, key, ca), f"{empty}: is empty"),
        ((cert, junk, ca), f"{junk}: holds no PEM key"),
        ((cert, key, key), f"{key}: holds no PEM certificate"),
        ((cert, key, tmp_path / "missing.crt"), "missing.crt: does not exist"),
    ):
        text = f". {{\n kubernetai cluster.local {{\n  endpoint https://127.0.0.1:6443\n  tls {' '.join(map(str, files))}\n }}\n}}"
        with pytest.raises(CorefileError) as e:
            load_text(text, 53, reactor)
        assert wanted in str(e.value)
    ok = f". {{\n kubernetai cluster.local {{\n  endpoint https://127.0.0.1:6443\n  tls {cert} {key} {ca}\n }}\n}}"
    load_text(ok, 53, reactor)


@pytest.mark.e2e
@pytest_twisted.inlineCallbacks
def test_a_kubeconfig_fixed_after_a_401_is_read_again_without_a_restart(tmp_path, pki, api):
    """Issue 12, item 18: an inline token (not a token file) corrected in the kubeconfig."""
    cluster, start = api
    cluster.token = "right"
    port = start(require_client=False)
    server = f"https://127.0.0.1:{port}"
    path = kubeconfig_file(tmp_path, server, {"token": "wrong"}, ca_pem=pki["ca"].pem)
    conn = connection_for(opts(kubeconfig=path, context="ctx", startup_timeout=1.0), reactor)
    stanza = KubernetesCluster.from_api(opts(kubeconfig=path, context="ctx", startup_timeout=1.0), conn, reactor)
    stanza.startService()
    try:
        ok = yield stanza.wait_synced(reactor)
        assert not ok
        states = {w.state for w in stanza if isinstance(w, Watcher)}
        assert all(s.startswith("unauthorized (HTTP 401)") for s in states), states
        kubeconfig_file(tmp_path, server, {"token": "right"}, ca_pem=pki["ca"].pem)  # fixed in place
        for _ in range(100):  # the next retry reads it (backoff: a few seconds at most)
            if stanza.synced:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert stanza.synced
    finally:
        yield stanza.stopService()
