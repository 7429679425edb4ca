"""A fake Kubernetes API server that speaks the real list/watch protocol.

Follows the API concepts documentation: every change gets a new
resourceVersion; list answers carry the collection's resourceVersion and a
``continue`` token when ``limit`` cuts them; ``?watch=1`` from a
resourceVersion streams (chunked, one JSON event per line) every later
change, then holds the connection open; bookmarks on demand; a
resourceVersion older than the compacted history is ``410 Gone`` (as HTTP
410 or as an ERROR event).  Failures can be injected: 401/429/500 answers,
hangs, dropped streams, JSON lines split across chunks, restarts.

Use it in memory through ``treq.testing.StubTreq(FakeApi(cluster))`` or on a
loopback port with ``listen()``.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import parse_qs

import attrs
from twisted.internet import reactor as global_reactor
from twisted.web import resource, server

from kubernetai.cluster.selectors import parse_selector

# kind → (group path, plural, namespaced)
RESOURCES = {
    "Service": ("/api/v1", "services", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Pod": ("/api/v1", "pods", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceImport": ("/apis/multicluster.x-k8s.io/v1alpha1", "serviceimports", True),
}
API_VERSIONS = {
    "Service": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "Pod": "v1",
    "Namespace": "v1",
    "ServiceImport": "multicluster.x-k8s.io/v1alpha1",
}


def key_of(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


@attrs.define
class Watch:
    request: Any
    kind: str
    namespace: str
    selector: Any
    excluded_phases: tuple = ()  # from a fieldSelector status.phase!=X
    timer: Any = None


@attrs.define
class Failure:
    code: int
    count: int
    retry_after: int | None = None
    paths: str = ""  # substring of the path it applies to ("" = any)
    watch_only: bool = False


@attrs.define
class FakeCluster:
    """Objects and their history; the state behind one fake API server."""

    clock: Any = global_reactor
    rv: int = 100
    objects: dict[str, dict[tuple[str, str], dict]] = attrs.Factory(lambda: {k: {} for k in RESOURCES})
    history: list[tuple[int, str, str, dict]] = attrs.Factory(list)  # (rv, kind, type, object)
    compacted: int = 0  # watches from an rv below this get 410
    watches: list[Watch] = attrs.Factory(list)
    failures: list[Failure] = attrs.Factory(list)
    hang_next: int = 0
    split_lines: bool = False
    gone_as_event: bool = True
    token: str | None = None  # require "Authorization: Bearer <token>"
    requests: list[tuple[str, dict, dict]] = attrs.Factory(list)
    continue_tokens: dict[str, tuple[str, int, list]] = attrs.Factory(dict)
    _next_continue: int = 0

    # ------------------------------------------------------------ mutations
    def _stamp(self, obj: dict) -> dict:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return obj

    def add(self, obj: dict, event: str | None = None) -> dict:
        kind = obj["kind"]
        obj = self._stamp(obj)
        existed = key_of(obj) in self.objects[kind]
        self.objects[kind][key_of(obj)] = obj
        self._emit(kind, event or ("MODIFIED" if existed else "ADDED"), obj)
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        obj = self.objects[kind].pop((namespace, name))
        obj = self._stamp(obj)
        self._emit(kind, "DELETED", obj)

    def load(self, objects: list[dict]) -> None:
        for obj in objects:
            self.add(obj)

    def _emit(self, kind: str, event: str, obj: dict) -> None:
        self.history.append((self.rv, kind, event, obj))
        for w in list(self.watches):
            if w.kind == kind and self._matches(w, obj):
                self._send(w, {"type": event, "object": obj})

    def bookmark(self) -> None:
        for w in list(self.watches):
            self._send(
                w,
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": w.kind,
                        "apiVersion": API_VERSIONS[w.kind],
                        "metadata": {"resourceVersion": str(self.rv)},
                    },
                },
            )

    def compact(self) -> None:
        """Forget history: watches from before the current resourceVersion get 410.

        The resourceVersion moves on first, as other writers' changes would
        have during the compaction window.
        """
        self.history.clear()
        self.rv += 10
        self.compacted = self.rv

    def drop_watches(self) -> None:
        """Abort every open watch connection (as a dying API server would)."""
        for w in list(self.watches):
            self._close(w, abort=True)

    def end_watches(self) -> None:
        """End every watch cleanly (as timeoutSeconds would)."""
        for w in list(self.watches):
            self._close(w)

    def restart(self) -> None:
        """An API server restart: streams die, and (as a real one's watch cache starts afresh)
        a watch from before it gets 410, compacted or not."""
        self.drop_watches()
        self.compact()

    def fail(
        self, code: int, count: int = 1, retry_after: int | None = None, paths: str = "", watch_only: bool = False
    ) -> None:
        self.failures.append(Failure(code, count, retry_after, paths, watch_only))

    # ------------------------------------------------------------ serving
    def _matches(self, w: Watch, obj: dict) -> bool:
        ns = obj["metadata"].get("namespace", "")
        if w.namespace and ns != w.namespace:
            return False
        if (obj.get("status") or {}).get("phase") in w.excluded_phases:
            return False
        return w.selector is None or w.selector.matches(obj["metadata"].get("labels") or {})

    def _send(self, w: Watch, event: dict) -> None:
        line = json.dumps(event).encode() + b"\n"
        if self.split_lines and len(line) > 2:
            mid = len(line) // 2
            w.request.write(line[:mid])
            w.request.write(line[mid:])
        else:
            w.request.write(line)

    def _close(self, w: Watch, abort: bool = False) -> None:
        if w in self.watches:
            self.watches.remove(w)
        if w.timer is not None and w.timer.active():
            w.timer.cancel()
        if abort:
            w.request.transport.abortConnection() if hasattr(
                w.request.transport, "abortConnection"
            ) else w.request.transport.loseConnection()
        elif not w.request.finished and not w.request._disconnected:  # a client gone: nothing to finish
            w.request.finish()


class FakeApi(resource.Resource):
    """The HTTP face of a FakeCluster."""

    isLeaf = True

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__()
        self.cluster = cluster

    def render_GET(self, request: server.Request) -> Any:
        c = self.cluster
        path = request.path.decode()
        params = {
            k.decode(): v[0].decode()
            for k, v in parse_qs(request.uri.split(b"?", 1)[1] if b"?" in request.uri else b"").items()
        }
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        c.requests.append((path, params, headers))
        request.setHeader(b"content-type", b"application/json")
        if c.token is not None and headers.get("authorization") != f"Bearer {c.token}":
            return self._status(request, 401, "Unauthorized")
        watching = params.get("watch") in ("1", "true")
        for f in c.failures:
            if f.count > 0 and f.paths in path and (watching or not f.watch_only):
                f.count -= 1
                if f.retry_after is not None:
                    request.setHeader(b"retry-after", str(f.retry_after).encode())
                return self._status(request, f.code, "injected failure")
        if c.hang_next > 0:
            c.hang_next -= 1
            return server.NOT_DONE_YET
        target = self._target(path)
        if target is None:
            # As kube-apiserver for a group/resource it does not serve (a CRD not installed):
            # plain text, not a Status object.
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        kind, namespace = target
        try:
            selector = parse_selector(params["labelSelector"]) if params.get("labelSelector") else None
        except ValueError:
            return self._status(request, 400, "bad labelSelector")
        # Field selectors: only what the real API supports and we send (status.phase!=X for pods).
        excluded = []
        for term in filter(None, params.get("fieldSelector", "").split(",")):
            field, sep, value = term.partition("!=")
            if field != "status.phase" or not sep or kind != "Pod":
                return self._status(request, 400, f"field label not supported: {term}")
            excluded.append(value)
        request.excluded_phases = tuple(excluded)  # type: ignore[attr-defined]
        if watching:
            return self._watch(request, kind, namespace, selector, params)
        return self._list(request, kind, namespace, selector, params)

    def _target(self, path: str) -> tuple[str, str] | None:
        for kind, (group, plural, namespaced) in RESOURCES.items():
            if path == f"{group}/{plural}":
                return kind, ""
            prefix = f"{group}/namespaces/"
            if namespaced and path.startswith(prefix) and path.endswith(f"/{plural}"):
                ns = path[len(prefix) : -len(plural) - 1]
                if ns and "/" not in ns:
                    return kind, ns
        return None

    def _status(self, request: server.Request, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        reason = {401: "Unauthorized", 410: "Expired", 429: "TooManyRequests", 500: "InternalError"}.get(code, "")
        return json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            }
        ).encode()

    def _list(self, request: server.Request, kind: str, namespace: str, selector: Any, params: dict) -> bytes:
        c = self.cluster
        if params.get("continue"):
            entry = c.continue_tokens.get(params["continue"])
            if entry is None:
                return self._status(request, 410, "continue token expired")
            _, list_rv, items = entry
        else:
            w = Watch(request, kind, namespace, selector, getattr(request, "excluded_phases", ()))
            items = [o for k, o in sorted(c.objects[kind].items()) if c._matches(w, o)]
            list_rv = c.rv
        limit = int(params.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            c._next_continue += 1
            token = f"c{c._next_continue}"
            c.continue_tokens[token] = (kind, list_rv, items[limit:])
            meta["continue"] = token
            items = items[:limit]
        body = {"kind": f"{kind}List", "apiVersion": API_VERSIONS[kind], "metadata": meta, "items": items}
        return json.dumps(body).encode()

    def _watch(self, request: server.Request, kind: str, namespace: str, selector: Any, params: dict) -> Any:
        c = self.cluster
        since = int(params.get("resourceVersion") or 0)
        if since and since < c.compacted:
            if not c.gone_as_event:
                return self._status(request, 410, "too old resource version")
            request.write(
                json.dumps(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "message": "too old resource version",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                ).encode()
                + b"\n"
            )
            request.finish()
            return server.NOT_DONE_YET
        w = Watch(request, kind, namespace, selector, getattr(request, "excluded_phases", ()))
        c.watches.append(w)
        request.notifyFinish().addBoth(lambda _: c.watches.remove(w) if w in c.watches else None)
        request.write(b"")  # send headers now, as the real API server does
        for rv, k, event, obj in list(c.history):
            if k == kind and rv > since and c._matches(w, obj):
                c._send(w, {"type": event, "object": obj})
        timeout = int(params.get("timeoutSeconds") or 0)
        if timeout:
            w.timer = c.clock.callLater(timeout, c._close, w)
        return server.NOT_DONE_YET


class ApiSite(server.Site):
    """The fake API's site; ``down`` closes every new connection at once.

    An outage that keeps the port: closing the listener and binding the
    same number again later would race with other processes on the machine.
    """

    down = False

    def buildProtocol(self, addr: Any) -> Any:
        return None if self.down else super().buildProtocol(addr)


def listen(cluster: FakeCluster, port: int = 0, context_factory: Any = None, reactor: Any = global_reactor) -> Any:
    """Serve on 127.0.0.1 (https when a context factory is given); ``.factory`` is the ApiSite."""
    site = ApiSite(FakeApi(cluster))
    site.noisy = False
    if context_factory is not None:
        return reactor.listenSSL(port, site, context_factory, interface="127.0.0.1")
    return reactor.listenTCP(port, site, interface="127.0.0.1")


# ---------------------------------------------------------------- object builders


def service(
    name: str,
    ns: str = "default",
    ip: str | list[str] | None = "10.96.0.10",
    ports=((None, "TCP", 80),),
    type: str = "ClusterIP",
    labels: dict | None = None,
    external_name: str = "",
    external_ips: list[str] | None = None,
    ingress: list[dict] | None = None,
) -> dict:
    ips = [ip] if isinstance(ip, str) else list(ip or [])
    spec: dict[str, Any] = {
        "type": type,
        "ports": [{"port": p, "protocol": proto, **({"name": n} if n else {})} for n, proto, p in ports],
    }
    if type == "ExternalName":
        spec["externalName"] = external_name
    else:
        spec["clusterIP"] = ips[0] if ips else "None"
        spec["clusterIPs"] = ips or ["None"]
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
    }
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return obj


def slice_(
    service_name: str,
    addresses: list[str],
    ns: str = "default",
    name: str | None = None,
    hostnames: list[str] | None = None,
    ready: bool = True,
    ports=((None, "TCP", 80),),
    family: str = "IPv4",
) -> dict:
    eps = []
    for i, addr in enumerate(addresses):
        ep: dict[str, Any] = {"addresses": [addr], "conditions": {"ready": ready}}
        if hostnames and hostnames[i]:
            ep["hostname"] = hostnames[i]
        eps.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abcde",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": family,
        "endpoints": eps,
        "ports": [{"port": p, "protocol": proto, **({"name": n} if n else {})} for n, proto, p in ports],
    }


def pod(name: str, ip: str, ns: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"},
    }


def namespace(name: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
    }
