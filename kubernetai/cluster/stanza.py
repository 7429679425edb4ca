"""One ``kubernetai`` stanza at run time: options, store, what feeds it, its resolver — one object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from kubernetai.cluster import kinds
from kubernetai.cluster.kubeapi import ApiClient
from kubernetai.cluster.kubeconfig import Connection
from kubernetai.cluster.options import KubernetesOptions
from kubernetai.cluster.resolver import KubernetesResolver
from kubernetai.cluster.store import ClusterStore
from kubernetai.cluster.watch import ResourceSpec, Watcher

__all__ = ["resource_specs", "KubernetesCluster"]

log = Logger()


def resource_specs(opts: KubernetesOptions) -> list[ResourceSpec]:
    """What a stanza watches; namespaces and label selectors applied server-side."""
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
        self.setName(opts.name())

    @classmethod
    def from_api(
        cls, opts: KubernetesOptions, conn: Connection, reactor: Any, local_ips: Sequence[str] = (), http: Any = None
    ) -> KubernetesCluster:
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
        return self.synced and not any(w.refused for w in self if isinstance(w, Watcher))

    def status(self) -> dict:
        watchers = [w for w in self if isinstance(w, Watcher)]
        snapshot = [s.status() for s in self if hasattr(s, "patterns")]
        return {
            **({"manifests": snapshot[0]} if snapshot else {}),
            "zones": list(self.opts.zones),
            "cluster": self.opts.connection_name(),
            **({"endpoint": self.connection.url_in_use} if self.connection is not None else {}),
            "synced": self.store.synced,
            "connected": bool(snapshot) or (bool(watchers) and all(w.state == "watching" for w in watchers)),
            "last_sync": self.store.last_sync,
            "generation": self.store.generation,
            "objects": self.store.counts(),
            "watches": {w.spec.describe(): w.state for w in watchers},
        }
