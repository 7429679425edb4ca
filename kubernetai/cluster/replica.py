"""A store kept as a copy of another process's: how ``--workers`` share one watch per cluster.

The process that watches (the primary) records every write's *effect* on a
stanza's store (``ClusterStore.journal``): an object put, a key deleted, a
batch finished (``changed``), a scope required or synced.  Batches go to
each worker as they finish; a worker applies them with the same store
methods, so its store, its change counters (``generation``,
``fine_version``) and so its answer cache move exactly as the primary's do.
A worker that starts late gets ``snapshot_ops`` first: the same writes that
would build the store as it is now.  Effects, not watch events: a relist
sends only what changed and what it deleted, never the whole list again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kubernetai.cluster.store import ClusterStore

__all__ = ["Journal", "apply_ops", "snapshot_ops", "BATCH_OBJECTS", "SNAPSHOT_SCOPE"]

# A copy is required to have had its whole snapshot before it counts as synced (the worker holds
# queries until then, as the primary does until its first lists).
SNAPSHOT_SCOPE = ("(snapshot)", "")

# Objects per message in a snapshot: bounded messages, and the worker's reactor breathes in between.
BATCH_OBJECTS = 1000

# The ops that end a batch: everything before them is one consistent change.
_ENDS_BATCH = frozenset(("changed", "synced", "require", "touch"))


class Journal:
    """Collects one store's ops and hands each finished batch to ``send``."""

    def __init__(self, send: Callable[[list[tuple]], None]) -> None:
        self.send = send
        self.pending: list[tuple] = []

    def __call__(self, op: tuple) -> None:
        self.pending.append(op)
        if op[0] in _ENDS_BATCH:
            batch, self.pending = self.pending, []
            self.send(batch)


def snapshot_ops(store: ClusterStore) -> Iterator[list[tuple]]:
    """Batches of ops that turn an empty store into a copy of ``store`` (synced scopes last)."""
    yield [("require", scope) for scope in sorted(store.required)]
    batch: list[tuple] = []
    for kind, table in store.objects.items():
        for obj in table.values():
            batch.append(("put", kind, obj))
            if len(batch) >= BATCH_OBJECTS:
                batch.append(("changed",))
                yield batch
                batch = []
    batch.append(("changed",))
    yield batch
    yield [("synced", scope) for scope in sorted(store.synced_scopes)] + [("synced", SNAPSHOT_SCOPE)]


def apply_ops(store: ClusterStore, ops: list[tuple]) -> None:
    """Apply one batch (from ``Journal`` or ``snapshot_ops``) to a worker's store."""
    for op in ops:
        what = op[0]
        if what == "put":
            store._put(op[1], op[2])
        elif what == "del":
            store._delete(op[1], op[2])
        elif what == "changed":
            store._changed()
        elif what == "synced":
            store._scope_synced(op[1])
        elif what == "require":
            store.require(op[1])
        elif what == "touch":
            store.touch_sync()
        else:
            raise ValueError(f"unknown store op {what!r}")
