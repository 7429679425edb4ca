"""One ``kubernetai`` stanza at run time: options, store, what feeds it, its resolver — one object."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from kubernetai.cluster import kinds
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.cluster.store import ClusterStore
from kubernetai.metrics import Histogram, histogram_in

if TYPE_CHECKING:
    from kubernetai.cluster.kubeconfig import Connection
    from kubernetai.cluster.watch import ResourceSpec, Watcher

__all__ = ["resource_specs", "KubernetesCluster"]

log = Logger()


def resource_specs(opts: KubernetesOptions) -> list[ResourceSpec]:
    """What a stanza watches; namespaces and label selectors applied server-side."""
    from kubernetai.cluster.watch import ResourceSpec

    specs = []
    for kind in kinds.needed(opts):
        selector = str(kind.selector(opts)) if kind.selector else ""
        for ns in (opts.namespaces or ("",)) if kind.namespaced else ("",):
            specs.append(ResourceSpec(kind.name, kind.api, kind.plural, ns, selector, kind.fields))
    return specs


@implementer(IService)
class KubernetesCluster(KubernetesResolver, MultiService):
    """One cluster behind one stanza: an ``IResolver`` over its store and an ``IService``.

    Its child services feed the store (one Watcher per resource, or a
    ManifestSource); starting it starts the list+watch, stopping it closes
    the watches.  It answers as the stanza does, with fallthrough expressed
    by Twisted's exceptions (see resolver.py).
    """

    def __init__(
        self,
        opts: KubernetesOptions,
        store: ClusterStore,
        local_ips: Sequence[str] = (),
        connection: Connection | None = None,
    ) -> None:
        KubernetesResolver.__init__(self, opts, store, local_ips)
        MultiService.__init__(self)
        self.connection = connection
        # No service name: on a reload the changed stanza and its successor (same name) run side by side.

    @classmethod
    def from_api(
        cls, opts: KubernetesOptions, conn: Connection, reactor: Any, local_ips: Sequence[str] = (), http: Any = None
    ) -> KubernetesCluster:
        # Imported here: treq, TLS and the HTTP client cost ~60 ms of start-up a manifests stanza never needs.
        from kubernetai.cluster.kubeapi import ApiClient
        from kubernetai.cluster.watch import Watcher

        cluster = cls(opts, ClusterStore(clock=reactor.seconds), local_ips, conn)
        api = ApiClient(
            conn,
            reactor,
            http=http,
            qps=opts.apiserver_qps,
            burst=opts.apiserver_burst,
            max_inflight=opts.apiserver_max_inflight,
        )
        for spec in resource_specs(opts):
            Watcher(spec, api, cluster.store, reactor, cluster=opts.name()).setServiceParent(cluster)
        return cluster

    @classmethod
    def from_manifests(cls, opts: KubernetesOptions, reactor: Any, local_ips: Sequence[str] = ()) -> KubernetesCluster:
        from kubernetai.cluster.snapshot import ManifestSource

        cluster = cls(opts, ClusterStore(clock=reactor.seconds), local_ips)
        ManifestSource(opts.manifests, opts, cluster.store, reactor, cluster=opts.name()).setServiceParent(cluster)
        return cluster

    @classmethod
    def replica(cls, opts: KubernetesOptions, reactor: Any, local_ips: Sequence[str] = ()) -> KubernetesCluster:
        """A stanza of a ``--workers`` process: no watch of its own, its store is a copy (replica.py)."""
        from kubernetai.cluster.replica import SNAPSHOT_SCOPE

        store = ClusterStore(clock=reactor.seconds)
        store.require(SNAPSHOT_SCOPE)
        return cls(opts, store, local_ips)

    def when_synced(self) -> defer.Deferred[None]:
        """Fires (with None) once every resource has been listed, at once if it already has."""
        d: defer.Deferred[None] = defer.Deferred()
        self.store.when_synced(lambda: d.callback(None))  # called once
        return d

    @property
    def synced(self) -> bool:
        return self.store.synced

    def wait_synced(self, reactor: IReactorTime) -> defer.Deferred:
        """Fires True once synced, or False after ``startup_timeout``.

        Either way, the first sync is logged with the object counts when it
        happens (later, for a cluster that was down at start-up).
        """
        d: defer.Deferred = defer.Deferred()

        def synced() -> None:
            self._announce()
            if not d.called:
                timeout.cancel()
                d.callback(True)

        def expired() -> None:
            if not d.called:
                d.callback(False)

        timeout = reactor.callLater(self.opts.startup_timeout, expired)
        self.store.when_synced(synced)
        return d

    def _announce(self) -> None:
        counts = ", ".join(f"{n} {kind}s" for kind, n in self.store.counts().items() if n)
        log.info("{name}: synced ({counts})", name=self.opts.name(), counts=counts or "no objects")

    @property
    def ready(self) -> bool:
        """Synced, and no resource refused to our credentials (a 401/403 is a configuration error
        that /ready should show, though the last good data keeps serving)."""
        return self.synced and not any(w.refused for w in self._watchers())

    def _watchers(self) -> list[Watcher]:
        return [w for w in self if getattr(w, "watches_api", False)]

    @property
    def connected(self) -> bool:
        """Every watch established (a manifests stanza is always "connected" to its files)."""
        watchers = self._watchers()
        return self.opts.manifests != () or (bool(watchers) and all(w.state == "watching" for w in watchers))

    # A ``--workers`` copy has no watch: the primary tells it its stanza's down_since (workers.py).
    replica_down_since: float | None = None

    def down_since(self) -> float | None:
        """Since when some watch of this stanza has not been watching; None while all are (or for files)."""
        times = [w.down_since for w in self._watchers() if w.state != "watching" and w.down_since]
        return min(times) if times else self.replica_down_since

    def source(self) -> dict:
        """Where the data comes from, without credentials (endpoint URLs never carry any: options.py)."""
        if self.opts.manifests:
            return {"manifests": list(self.opts.manifests)}
        if self.opts.kubeconfig:
            return {"kubeconfig": self.opts.kubeconfig, "context": self.opts.context or None}
        if self.opts.endpoint:
            return {"endpoints": list(self.opts.endpoints)}
        return {"in_cluster": True}

    def status(self) -> dict:
        """What /status shows of this stanza (times in ISO 8601, UTC)."""
        watchers = self._watchers()
        snapshot = [s.status() for s in self if hasattr(s, "patterns")]
        failed = max(((w.last_error_at, w.last_error) for w in watchers if w.last_error), default=None)
        connected = self.connected
        states = [w.since for w in watchers if w.since]
        return {
            "name": self.opts.name(),
            "zones": list(self.opts.zones),
            "source": self.source(),
            **({"manifests": snapshot[0]} if snapshot else {}),
            **({"endpoint": self.connection.serving_url} if self.connection is not None else {}),
            "synced": self.store.synced,
            "connected": connected,
            # since when connected (the last watch to connect), or disconnected (the first to drop)
            "since": _iso((max(states) if connected else min(states)) if states else 0.0),
            "last_sync": _iso(self.store.last_sync),
            "last_error": failed[1] if failed else None,
            "last_error_at": _iso(failed[0]) if failed else None,
            "retries": sum(w.backoff.failures for w in watchers),
            "generation": self.store.generation,
            "objects": self.store.counts(),
            "resources": {
                w.spec.describe(): {
                    "state": w.state,
                    "since": _iso(w.since),
                    "resource_version": w.rv,
                    "events": w.events,
                    "restarts": dict(w.restarts),
                    "relists": dict(w.relists),
                }
                for w in watchers
            },
        }

    def metrics_state(self) -> dict:
        """What the metrics collector reads at scrape time (kubernetai.metrics)."""
        watchers = self._watchers()
        api: Counter[str] = Counter()
        for client in {id(w.api): w.api for w in watchers}.values():
            api.update(client.codes)
        programming: dict[str, Histogram] = {}
        for w in watchers:
            for kind, h in w.programming.items():
                histogram_in(programming, kind, h.bounds).add(h)
        return {
            "synced": self.store.synced,
            "connected": self.connected,
            "objects": self.store.counts(),
            "last_sync": self.store.last_sync,
            "generation": self.store.generation,
            "last_event": max((w.last_event_at for w in watchers), default=0.0),
            "restarts": Counter({(w.spec.describe(), r): n for w in watchers for r, n in w.restarts.items()}),
            "relists": Counter({(w.spec.describe(), r): n for w in watchers for r, n in w.relists.items()}),
            "api_requests": api,
            "programming": programming,
        }


def _iso(seconds: float) -> str | None:
    """Unix seconds as ISO 8601 (UTC); None for never."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
