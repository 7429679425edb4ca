"""Where a cluster's API is and how to authenticate: endpoint/tls, kubeconfig, in-cluster.

kubeconfig files are read with the ``kubernetes`` package's loader (merging,
contexts, inline ``*-data`` fields, relative paths); nothing of its API
client is used.  Credentials that rotate keep working: token files are
re-read when they change (and at least every minute), exec credential
plugins run asynchronously and are re-run before they expire, and any
credential is refreshed once after a 401.  Certificate files are read per
new TLS connection, so rotated certificates are picked up without a restart.
No credential is ever logged: ``describe()`` names files and contexts only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
from twisted.internet import defer, utils
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from kubernetai.cluster.options import KubernetesOptions
from kubernetai.lazy_repr import LazyRepr

__all__ = [
    "ConfigError",
    "Auth",
    "NoAuth",
    "StaticAuth",
    "TokenFileAuth",
    "ExecAuth",
    "TLSFiles",
    "ClusterTLSPolicy",
    "Connection",
    "connection_for",
    "SERVICEACCOUNT_DIR",
]

log = Logger()

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REREAD = 60.0  # seconds: bound service-account tokens rotate hourly


class ConfigError(Exception):
    """The connection cannot be set up as configured; the message says why."""


class Auth(Protocol):
    def header(self) -> defer.Deferred:
        """Fires with the Authorization header value (bytes) or None."""

    def invalidate(self) -> None:
        """The API answered 401: the next header() must refresh."""

    def client_certificate(self) -> tuple[bytes, bytes] | None:
        """PEM certificate and key supplied by the credential (exec), if any."""


class NoAuth:
    def header(self) -> defer.Deferred:
        return defer.succeed(None)

    def invalidate(self) -> None:
        pass

    def client_certificate(self) -> tuple[bytes, bytes] | None:
        return None


@attrs.define(repr=False)
class StaticAuth(NoAuth, LazyRepr):
    """A bearer token or basic-auth value written in the kubeconfig."""

    value: bytes = attrs.field(repr=False)

    def header(self) -> defer.Deferred:
        return defer.succeed(self.value)


@attrs.define(repr=False)
class TokenFileAuth(NoAuth, LazyRepr):
    """A bearer token file, re-read when it changes, at least every minute, and after a 401."""

    path: str
    clock: Callable[[], float] = time.time
    _token: bytes | None = attrs.field(default=None, repr=False)
    _stamp: tuple | None = None
    _read_at: float = 0.0

    def header(self) -> defer.Deferred:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if self._token is None or stamp != self._stamp or self.clock() - self._read_at >= TOKEN_REREAD:
                with open(self.path, "rb") as f:
                    token = f.read().strip()
                if not token:
                    raise ConfigError(f"token file {self.path} is empty")
                self._token, self._stamp, self._read_at = token, stamp, self.clock()
        except OSError as e:
            if self._token is None:
                return defer.fail(ConfigError(f"cannot read token file {self.path}: {e.strerror}"))
        return defer.succeed(b"Bearer " + self._token)

    def invalidate(self) -> None:
        self._token = None


@attrs.define(repr=False)
class ExecAuth(NoAuth, LazyRepr):
    """A client-go exec credential plugin, run without blocking the reactor."""

    spec: Mapping[str, Any] = attrs.field(repr=False)
    base_dir: str
    reactor: Any
    cluster_info: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    _credential: dict | None = attrs.field(default=None, repr=False)
    _expires: float | None = None
    _waiters: list = attrs.Factory(list)

    def _fresh(self) -> bool:
        if self._credential is None:
            return False
        if self._expires is None:
            return True
        return self.reactor.seconds() < self._expires - 60  # refresh before expiry

    def _command(self) -> str:
        command = self.spec.get("command") or ""
        if not command:
            raise ConfigError("exec credential plugin has no command")
        if os.sep in command and not os.path.isabs(command):
            command = os.path.join(self.base_dir, command)
        found = command if os.sep in command else shutil.which(command)
        if not found or not os.access(found, os.X_OK):
            raise ConfigError(f"exec credential plugin {command!r} not found or not executable")
        return found

    def _run(self) -> defer.Deferred:
        command = self._command()
        env = dict(os.environ)
        for item in self.spec.get("env") or ():
            env[item["name"]] = item["value"]
        info: dict[str, Any] = {
            "apiVersion": self.spec.get("apiVersion") or "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        if self.spec.get("provideClusterInfo") and self.cluster_info:
            info["spec"]["cluster"] = self.cluster_info
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        d = utils.getProcessOutputAndValue(
            command, [str(a) for a in self.spec.get("args") or ()], env=env, path=self.base_dir, reactor=self.reactor
        )
        return d.addCallback(self._parse, command)

    def _parse(self, result: tuple[bytes, bytes, int], command: str) -> dict:
        out, _err, code = result
        name = os.path.basename(command)
        if code != 0:
            raise ConfigError(f"exec credential plugin {name} exited with status {code}")
        try:
            status = json.loads(out)["status"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"exec credential plugin {name} printed no ExecCredential status") from None
        if "token" not in status and not ("clientCertificateData" in status and "clientKeyData" in status):
            raise ConfigError(f"exec credential plugin {name} returned neither a token nor a client certificate")
        self._credential = status
        self._expires = None
        if status.get("expirationTimestamp"):
            stamp = datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
            # Convert wall-clock expiry to the reactor's clock.
            self._expires = self.reactor.seconds() + (stamp - datetime.now(UTC)).total_seconds()
        return status

    def _ensure(self) -> defer.Deferred:
        """The current credential; concurrent callers share one plugin run."""
        if self._fresh():
            return defer.succeed(self._credential)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        if len(self._waiters) == 1:
            defer.maybeDeferred(self._run).addBoth(self._wake)
        return d

    def _wake(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def header(self) -> defer.Deferred:
        d = defer.maybeDeferred(self._ensure)
        return d.addCallback(lambda s: ("Bearer " + s["token"]).encode() if "token" in s else None)

    def client_certificate(self) -> tuple[bytes, bytes] | None:
        s = self._credential or {}
        if "clientCertificateData" in s:
            return s["clientCertificateData"].encode(), s["clientKeyData"].encode()
        return None

    def invalidate(self) -> None:
        self._credential = None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]


@attrs.define(repr=False)
class TLSFiles(LazyRepr):
    """CA bundle and client certificate files; re-read per new connection when changed."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    # A kubeconfig's inline *-data, kept in memory only (never written to temporary files).
    ca_data: bytes = b""
    cert_data: bytes = b""
    key_data: bytes = b""


@implementer(IPolicyForHTTPS)
@attrs.define(repr=False)
class ClusterTLSPolicy(LazyRepr):
    """Verifies the API server against its CA (IP SANs too) and presents a client certificate.

    ``BrowserLikePolicyForHTTPS`` takes no client certificate; this does
    both.  Files are re-read when their modification time changes.
    """

    files: TLSFiles
    auth: Any = None
    _cache: dict[str, tuple[tuple, Any]] = attrs.Factory(dict)

    def _load(self, path: str, make: Callable[[bytes], Any]) -> Any:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, make(_read(path)))
            self._cache[path] = cached
        return cached[1]

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        f = self.files

        def trust(pem: bytes) -> Any:
            return trustRootFromCertificates([Certificate.loadPEM(c) for c in _split_pem(pem)])

        if f.ca_data:
            if "ca_data" not in self._cache:
                self._cache["ca_data"] = ((), trust(f.ca_data))
            roots = self._cache["ca_data"][1]
        elif f.ca_file:
            roots = self._load(f.ca_file, trust)
        else:
            roots = platformTrust()
        client = None
        dynamic = self.auth.client_certificate() if self.auth is not None else None
        if dynamic is not None:
            client = PrivateCertificate.loadPEM(dynamic[0] + b"\n" + dynamic[1])
        elif (f.cert_data or f.cert_file) and (f.key_data or f.key_file):
            cert = f.cert_data or self._load(f.cert_file, lambda b: b)
            key = f.key_data or self._load(f.key_file, lambda b: b)
            client = PrivateCertificate.loadPEM(cert + b"\n" + key)
        name = f.server_name or hostname.decode("ascii")
        return optionsForClientTLS(name, trustRoot=roots, clientCertificate=client)


@attrs.define(repr=False)
class Connection(LazyRepr):
    """One cluster's API: base URL(s), credentials, TLS files, and a loggable name.

    With several endpoints (``endpoint A B C``; CoreDNS uses only the first),
    a connection that is refused or times out moves to the next one, and after
    ``primary_retry`` seconds away the first is tried again, so it is used
    again once it recovers.
    """

    base_url: str
    auth: Any
    tls: TLSFiles | None
    name: str
    fallbacks: tuple[str, ...] = ()
    primary_retry: float = 30.0
    current: int = 0
    since: float = 0.0  # when we moved away from the first endpoint
    answered_by: str | None = None  # the endpoint that last answered (where the data comes from)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.base_url, *self.fallbacks)

    @property
    def url_in_use(self) -> str:
        return self.endpoints[self.current]

    @property
    def serving_url(self) -> str:
        """The endpoint our data comes from: the last to answer (the one to ask, before any did).

        Trying the first endpoint again while it is still down does not change it.
        """
        return self.answered_by or self.url_in_use

    def fail_over(self, now: float, base: str | None = None) -> None:
        """The endpoint ``base`` (default: the one in use) did not answer: use the next one.

        The watches of a stanza share this connection: when several were
        refused by the same endpoint, only the first refusal moves on; the
        later ones, about an endpoint already left, must not move us again
        (back onto it, with two endpoints).
        """
        if not self.fallbacks or (base is not None and base != self.url_in_use):
            return
        self.current = (self.current + 1) % len(self.endpoints)
        self.since = now
        log.warn("{name}: failing over to {url}", name=self.name, url=self.url_in_use)

    def url_for(self, now: float) -> str:
        """The endpoint to ask now: back to the first after ``primary_retry`` on another."""
        if self.current and now - self.since >= self.primary_retry:
            self.current = 0
        return self.url_in_use

    def policy(self) -> ClusterTLSPolicy:
        return ClusterTLSPolicy(self.tls or TLSFiles(), self.auth)


def _in_cluster(reactor: Any, environ: Mapping[str, str]) -> Connection:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "no endpoint or kubeconfig given and not running in a cluster "
            "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset)"
        )
    if ":" in host:
        host = f"[{host}]"
    token = os.path.join(SERVICEACCOUNT_DIR, "token")
    ca = os.path.join(SERVICEACCOUNT_DIR, "ca.crt")
    for path in (token, ca):
        if not os.path.exists(path):
            raise ConfigError(f"in-cluster configuration: {path} does not exist")
    return Connection(
        f"https://{host}:{port}", TokenFileAuth(token, reactor.seconds), TLSFiles(ca_file=ca), "in-cluster"
    )


MAX_KUBECONFIG = 4 * 2**20


@attrs.define(repr=False)
class KubeconfigAuth(LazyRepr):
    """A kubeconfig user's credentials, read again from the file when it has changed.

    Asked after a 401 (``invalidate``): a token fixed in the kubeconfig itself
    (not a token file) is then used without a restart.
    """

    path: str
    context: str
    reactor: Any
    inner: Any
    stamp: tuple

    def header(self) -> defer.Deferred:
        return self.inner.header()

    def client_certificate(self) -> tuple[bytes, bytes] | None:
        return self.inner.client_certificate()

    def invalidate(self) -> None:
        self.inner.invalidate()
        stamp = _file_stamp(self.path)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            conn = _from_kubeconfig(self.path, self.context, self.reactor, reloading=False)
        except ConfigError as e:
            log.warn("{error}; keeping its previous credentials", error=e)
            return
        self.inner = conn.auth
        log.info("kubeconfig {path} changed: its credentials are read again", path=self.path)


def _file_stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _from_kubeconfig(path: str, context: str, reactor: Any, reloading: bool = True) -> Connection:
    import yaml
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

    name = f"kubeconfig {path}" + (f" context {context}" if context else "")
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise ConfigError(f"kubeconfig {path} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"kubeconfig {path} is not a file")
    if os.path.getsize(path) > MAX_KUBECONFIG:
        raise ConfigError(f"kubeconfig {path} is larger than {MAX_KUBECONFIG // 2**20} MiB")
    try:
        merged = KubeConfigMerger(path)
        if merged.config is None:
            raise ConfigError(f"kubeconfig {path} holds no configuration")
        # Not loader._load_cluster_info(): it writes inline keys to temporary files that outlive us.
        loader = KubeConfigLoader(merged.config, active_context=context or None, config_base_path=None)
        cluster: Any = loader._cluster or {}
    except ConfigException as e:
        raise ConfigError(f"{name}: {e}") from None
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:  # not a kubeconfig at all
        why = " ".join(str(e).split())  # one line
        raise ConfigError(f"{name}: not a readable kubeconfig ({type(e).__name__}: {why})"[:300]) from None
    user: Any = loader._user or {}
    if cluster.safe_get("insecure-skip-tls-verify"):
        raise ConfigError(f"{name}: insecure-skip-tls-verify is set; kubernetai always verifies the API server")
    host = cluster.safe_get("server")
    if not host:
        raise ConfigError(f"{name}: the cluster has no server")
    base_dir = os.path.dirname(os.path.abspath(path))

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base_dir, p)

    if "auth-provider" in user:
        raise ConfigError(f"{name}: auth-provider credentials are not supported; use an exec plugin or a token")
    if user.safe_get("token"):
        auth: Any = StaticAuth(("Bearer " + user["token"]).encode())
    elif user.safe_get("tokenFile"):
        auth = TokenFileAuth(rel(user["tokenFile"]), reactor.seconds)
    elif "exec" in user:
        info = {"server": host}
        auth = ExecAuth(user["exec"].value if hasattr(user["exec"], "value") else user["exec"], base_dir, reactor, info)
    elif user.safe_get("username") and user.safe_get("password"):
        auth = StaticAuth(b"Basic " + base64.b64encode(f"{user['username']}:{user['password']}".encode()))
    else:
        auth = NoAuth()
    if reloading:
        auth = KubeconfigAuth(path, context, reactor, auth, _file_stamp(path))

    def file_or_data(node: Any, key: str) -> tuple[str, bytes]:
        if node.safe_get(f"{key}-data"):
            try:
                return "", base64.b64decode(node[f"{key}-data"])
            except ValueError:
                raise ConfigError(f"{name}: {key}-data is not base64") from None
        return (rel(node[key]) if node.safe_get(key) else ""), b""

    ca_file, ca_data = file_or_data(cluster, "certificate-authority")
    cert_file, cert_data = file_or_data(user, "client-certificate")
    key_file, key_data = file_or_data(user, "client-key")
    tls = TLSFiles(
        ca_file, cert_file, key_file, cluster.safe_get("tls-server-name") or "", ca_data, cert_data, key_data
    )
    return Connection(host.rstrip("/"), auth, tls, name)


def connection_for(opts: KubernetesOptions, reactor: Any, environ: Mapping[str, str] | None = None) -> Connection:
    """The stanza's connection: kubeconfig wins over endpoint; neither = in-cluster."""
    env = os.environ if environ is None else environ
    if opts.kubeconfig:
        conn = _from_kubeconfig(opts.kubeconfig, opts.context, reactor)
    elif opts.endpoint:
        url = opts.endpoint.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint {url!r} must start with http:// or https://")
        tls = None
        if opts.tls:
            cert, key, ca = opts.tls
            tls = TLSFiles(ca_file=ca, cert_file=cert, key_file=key)
        fallbacks = tuple(u.rstrip("/") for u in opts.endpoints[1:])
        for u in fallbacks:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"endpoint {u!r} must start with http:// or https://")
        conn = Connection(url, NoAuth(), tls, f"endpoint {url}", fallbacks)
    else:
        conn = _in_cluster(reactor, env)
    if conn.tls:
        files = ((conn.tls.ca_file, "certificate"), (conn.tls.cert_file, "certificate"), (conn.tls.key_file, "key"))
        for path, what in files:
            if path:
                problem = pem_problem(path, what)
                if problem:
                    raise ConfigError(f"{conn.name}: {path}: {problem}")
        inline = ((conn.tls.ca_data, "certificate"), (conn.tls.cert_data, "certificate"), (conn.tls.key_data, "key"))
        for data, what in inline:
            if data and _PEM_MARKERS[what] not in data:
                raise ConfigError(f"{conn.name}: inline {what} data holds no PEM {what}")
    return conn


_PEM_MARKERS = {"key": b"PRIVATE KEY-----", "certificate": b"-----BEGIN CERTIFICATE-----"}


def pem_problem(path: str, what: str) -> str:
    """Why a TLS file cannot serve (missing, empty, not PEM), or '': said at --check, not at run time."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 * 2**20 + 1)
    except OSError as e:
        return "does not exist" if isinstance(e, FileNotFoundError) else f"cannot read: {e.strerror}"
    if not data.strip():
        return "is empty"
    if len(data) > 2**20:
        return "is larger than 1 MiB"
    if _PEM_MARKERS[what] not in data:
        return f"holds no PEM {what}"
    return ""
