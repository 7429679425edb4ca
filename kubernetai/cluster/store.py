"""ClusterStore: one cluster's DNS-relevant objects, indexed by what queries ask.

The only mutable shared state: watchers (or snapshot readers) write through
``apply``/``relist``, record code reads.  Every lookup a query needs is a dict
lookup.  Twisted runs one thread, so each call here is atomic to queries.

Relists upsert page by page (an unchanged object keeps its old instance, so a
relist does not double memory) and delete what the new list lacks only at
the end: during a relist a name never disappears that still exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from kubernetai.changes import bucket, changed, changed_all, changed_key
from kubernetai.cluster.kinds import KINDS
from kubernetai.cluster.objects import EndpointSlice, Namespace, Pod, Service, ServiceImport
from kubernetai.lazy_repr import LazyRepr

__all__ = ["ClusterStore", "INDEXES", "Index", "Scope"]

# (kind, namespace or "" for all namespaces): the unit a watcher lists.
Scope = tuple[str, str]


@attrs.frozen(repr=False)
class Index(LazyRepr):
    """objects of ``kind`` by each of ``keys(obj)``, each bucket keyed by ``slot(obj)``."""

    name: str
    kind: str
    keys: Callable[[Any], Iterable[Any]]
    slot: Callable[[Any], Any]


def _slice_ips(sl: EndpointSlice) -> Iterable[str]:
    return (ip for ep in sl.endpoints for ip in ep.addresses)


# Every index, named by what queries ask.  ``_index``/``_unindex`` walk this table.
INDEXES: tuple[Index, ...] = (
    Index(
        "slices_by_service",
        "EndpointSlice",
        lambda sl: [(sl.namespace, sl.service)] if sl.service and not sl.mcs else [],
        lambda sl: sl.name,
    ),
    Index(
        "mcs_slices_by_service",
        "EndpointSlice",
        lambda sl: [(sl.namespace, sl.service)] if sl.service and sl.mcs else [],
        lambda sl: sl.name,
    ),
    Index("slices_by_ip", "EndpointSlice", _slice_ips, lambda sl: sl.key),
    Index("services_by_ip", "Service", lambda svc: [ip for ip in svc.cluster_ips if ip != "None"], lambda svc: svc.key),
    Index("pods_by_ip", "Pod", lambda pod: pod.ips, lambda pod: pod.key),
    # k8s_external's PTR: external addresses (hostnames too: they never look like a reverse name's IP)
    Index("services_by_external", "Service", lambda svc: svc.external, lambda svc: svc.key),
)
_INDEXES_OF: dict[str, tuple[Index, ...]] = {kind: tuple(i for i in INDEXES if i.kind == kind) for kind in KINDS}


class FineVersion:
    """``ClusterStore.fine_version``: a store-derived cache version (``changes.store_derived``) for one Service.

    A slotted callable rather than a marked closure: one is made for every
    answer about a Service that is not cached, and setting attributes on a
    fresh function costs it a ``__dict__``.
    """

    __slots__ = ("_store", "_namespace", "_key", "counter")
    store_only = True

    def __init__(self, store: ClusterStore, namespace: str, key: tuple[str, str]) -> None:
        self._store, self._namespace, self._key = store, namespace, key
        self.counter = bucket(key)

    def __call__(self) -> int:
        # A sum of counters that only grow: it changes whenever one of them does.
        s = self._store
        return s.sync_epoch + s.namespace_generation.get(self._namespace, 0) + s.service_generation.get(self._key, 0)


@attrs.define(eq=False, repr=False)
class ClusterStore(LazyRepr):
    """Indexed objects of one cluster, plus sync state and a change counter."""

    clock: Callable[[], float] = time.time
    objects: dict[str, dict[tuple[str, str], Any]] = attrs.Factory(lambda: {k: {} for k in KINDS})
    # INDEXES by name: key → the object, or {slot: object} when a key has several (see ``_index``)
    indexes: dict[str, dict[Any, dict[Any, Any]]] = attrs.Factory(lambda: {i.name: {} for i in INDEXES})
    # sync state
    required: set[Scope] = attrs.Factory(set)
    synced_scopes: set[Scope] = attrs.Factory(set)
    generation: int = 0
    # Bumped whenever the synced state may change: cache validity checks read this int, not the set test.
    sync_epoch: int = 0
    # Finer change counters, for answers that depend on one Service (and its slices) or one
    # Namespace only: churn elsewhere in the cluster leaves those answers cached.
    service_generation: dict[tuple[str, str], int] = attrs.Factory(dict)
    namespace_generation: dict[str, int] = attrs.Factory(dict)
    last_modified: float = 0.0
    last_sync: float = 0.0
    listeners: list[Callable[[ClusterStore], None]] = attrs.Factory(list)
    # Called once each, when the store first becomes synced.
    sync_waiters: list[Callable[[], None]] = attrs.Factory(list)
    # Told every write's effect (replica.py: how ``--workers`` processes get the data of one watch).
    journal: Callable[[tuple], None] | None = None

    # ------------------------------------------------------------ reads
    def service(self, namespace: str, name: str) -> Service | None:
        return self.objects["Service"].get((namespace, name))

    def _find(self, index: str, key: Any) -> Iterable[Any]:
        bucket = self.indexes[index].get(key)
        if bucket is None:
            return ()
        if type(bucket) is dict:
            return bucket.values()
        return (bucket,)

    def slices(self, namespace: str, service: str) -> Iterable[EndpointSlice]:
        return self._find("slices_by_service", (namespace, service))

    def mcs_slices(self, namespace: str, service: str) -> Iterable[EndpointSlice]:
        return self._find("mcs_slices_by_service", (namespace, service))

    def slices_with_ip(self, ip: str) -> Iterable[EndpointSlice]:
        return self._find("slices_by_ip", ip)

    def services_with_ip(self, ip: str) -> Iterable[Service]:
        return self._find("services_by_ip", ip)

    def services_with_external(self, address: str) -> Iterable[Service]:
        return self._find("services_by_external", address)

    def namespace(self, name: str) -> Namespace | None:
        return self.objects["Namespace"].get(("", name))

    def service_import(self, namespace: str, name: str) -> ServiceImport | None:
        return self.objects["ServiceImport"].get((namespace, name))

    def pods_with_ip(self, ip: str) -> Iterable[Pod]:
        return self._find("pods_by_ip", ip)

    def counts(self) -> dict[str, int]:
        return {kind: len(objs) for kind, objs in self.objects.items()}

    @property
    def synced(self) -> bool:
        return self.required <= self.synced_scopes

    # ------------------------------------------------------------ writes
    def require(self, scope: Scope) -> None:
        """Declare a scope whose first full list makes the store synced."""
        self.required.add(scope)
        self.sync_epoch += 1
        changed_all()
        if self.journal is not None:
            self.journal(("require", scope))

    def apply(self, event: str, kind: str, obj: Any) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        if event == "DELETED":
            changed = self._delete(kind, obj.key)
        else:
            changed = self._put(kind, obj)
        if changed:
            self._changed()

    def relist(self, scope: Scope, objs: Iterable[Any]) -> None:
        """A whole relist in one call: upsert ``objs``, drop the rest of ``scope``."""
        r = self.begin_relist(scope)
        r.page(objs)
        r.finish()

    def begin_relist(self, scope: Scope) -> Relist:
        """Page-by-page relist: feed pages, then ``finish()`` drops the rest."""
        return Relist(self, scope)

    def when_synced(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the store is synced (now, if it already is)."""
        if self.synced:
            callback()
        else:
            self.sync_waiters.append(callback)

    def _scope_synced(self, scope: Scope) -> None:
        if scope not in self.synced_scopes:
            self.sync_epoch += 1
            changed_all()
        self.synced_scopes.add(scope)
        self.last_sync = self.clock()
        if self.journal is not None:
            self.journal(("synced", scope))
        if self.sync_waiters and self.synced:
            waiters, self.sync_waiters = self.sync_waiters, []
            for callback in waiters:
                callback()

    def touch_sync(self) -> None:
        self.last_sync = self.clock()
        if self.journal is not None:
            self.journal(("touch",))

    # ------------------------------------------------------------ internals
    def _changed(self) -> None:
        self.generation += 1
        changed()
        self.last_modified = self.clock()
        if self.journal is not None:
            self.journal(("changed",))
        for listener in self.listeners:
            listener(self)

    def _put(self, kind: str, obj: Any) -> bool:
        table = self.objects[kind]
        old = table.get(obj.key)
        if old == obj:
            return False
        if old is not None:
            self._unindex(kind, old)
            self._touch(kind, old)
        table[obj.key] = obj
        self._index(kind, obj)
        self._touch(kind, obj)
        if self.journal is not None:
            self.journal(("put", kind, obj))
        return True

    def _delete(self, kind: str, key: tuple[str, str]) -> bool:
        old = self.objects[kind].pop(key, None)
        if old is None:
            return False
        self._unindex(kind, old)
        self._touch(kind, old)
        if self.journal is not None:
            self.journal(("del", kind, key))
        return True

    def _touch(self, kind: str, obj: Any) -> None:
        """Bump the finer counter an object of this kind feeds (see ``fine_version``), and the change counts."""
        if kind in ("Service", "ServiceImport"):
            key = (obj.namespace, obj.name)
        elif kind == "EndpointSlice":
            key = (obj.namespace, obj.service)
        elif kind == "Namespace":
            self.namespace_generation[obj.name] = self.namespace_generation.get(obj.name, 0) + 1
            changed_all()
            return
        else:
            changed()  # pods: answers that read them use the store's generation
            return
        self.service_generation[key] = self.service_generation.get(key, 0) + 1
        changed_key(key)  # at once: pages of a relist touch objects before the relist's one _changed()

    def fine_version(self, namespace: str, service: str) -> Callable[[], int]:
        """What an answer about one Service (or, with ``service`` empty, one Namespace) depends on."""
        return FineVersion(self, namespace, (namespace, service))

    # A bucket is the one object a key has (the common case: an IP names one slice) or, from the
    # second on, a dict {slot: object}.  A dict and a tuple per key cost ~180 bytes: 100,000
    # endpoint IPs made a quarter of the store (bench/README.md, memory).
    def _index(self, kind: str, obj: Any) -> None:
        for index in _INDEXES_OF[kind]:
            table = self.indexes[index.name]
            for key in index.keys(obj):
                bucket = table.get(key)
                if bucket is None:
                    table[key] = obj
                elif type(bucket) is dict:
                    bucket[index.slot(obj)] = obj
                else:
                    held = index.slot(bucket)
                    slot = index.slot(obj)
                    table[key] = obj if held == slot else {held: bucket, slot: obj}

    def _unindex(self, kind: str, obj: Any) -> None:
        for index in _INDEXES_OF[kind]:
            table = self.indexes[index.name]
            for key in index.keys(obj):
                _discard(table, key, index.slot(obj), index.slot)


def _discard(index: dict, outer: Any, inner: Any, slot: Callable[[Any], Any]) -> None:
    bucket = index.get(outer)
    if bucket is None:
        return
    if type(bucket) is dict:
        bucket.pop(inner, None)
        if len(bucket) == 1:
            (index[outer],) = bucket.values()
        elif not bucket:
            del index[outer]
    elif slot(bucket) == inner:
        del index[outer]


@attrs.define(repr=False)
class Relist(LazyRepr):
    """A relist in progress: pages upserted as they come, deletions at the end."""

    store: ClusterStore
    scope: Scope
    seen: set[tuple[str, str]] = attrs.Factory(set)
    changed: bool = False

    def page(self, objs: Iterable[Any]) -> None:
        kind = self.scope[0]
        for obj in objs:
            self.seen.add(obj.key)
            self.changed |= self.store._put(kind, obj)
        if self.changed:
            self.store._changed()
            self.changed = False

    def finish(self) -> None:
        kind, namespace = self.scope
        store = self.store
        stale = [k for k in store.objects[kind] if k not in self.seen and (not namespace or k[0] == namespace)]
        changed = False
        for key in stale:
            changed |= store._delete(kind, key)
        if changed:
            store._changed()
        store._scope_synced(self.scope)
