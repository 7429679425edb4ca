"""Process-wide counts of changes to the data that store-derived cache versions read.

The answer cache checks an answer's versions on every hit.  Most answers
depend on kubernetai stores only, and stores change far less often than
queries arrive: an answer found valid at a given count is still valid while
the count is the same, so a hit costs one comparison instead of a call per
version.  A version function opts in with ``store_derived``.

Two grains.  ``STORE_CHANGES`` moves on every change to any store.  An
answer about one Service reads only that Service, its slices, its Namespace
and the sync state (``ClusterStore.fine_version``): it watches one of
``BUCKETS``, chosen by its (namespace, service), which moves only when a
Service or slice of that bucket changes, or a Namespace or the sync state
does.  So 20 EndpointSlice changes a second re-check about a sixty-fourth
of the cached answers each time, not all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["BUCKETS", "STORE_CHANGES", "bucket", "changed", "changed_all", "changed_key", "store_derived"]

#: [count]: lists, so readers share them without a global statement or an attribute lookup.
STORE_CHANGES = [0]
BUCKETS: tuple[list[int], ...] = tuple([0] for _ in range(64))

F = TypeVar("F", bound=Callable)


def bucket(key: object) -> list[int]:
    """The count an answer about ``key`` (a (namespace, service) pair) watches."""
    return BUCKETS[hash(key) % len(BUCKETS)]


def changed() -> None:
    """Something in a store changed that answers about one Service do not read (pods, the generation)."""
    STORE_CHANGES[0] += 1


def changed_key(key: object) -> None:
    """A Service or EndpointSlice of ``key`` (namespace, service) changed."""
    STORE_CHANGES[0] += 1
    bucket(key)[0] += 1


def changed_all() -> None:
    """A Namespace or the sync state changed: every answer checks again."""
    STORE_CHANGES[0] += 1
    for b in BUCKETS:
        b[0] += 1


def store_derived(fn: F, counter: list[int] = STORE_CHANGES) -> F:
    """Mark ``fn`` as a cache version whose value changes only when ``counter`` moves."""
    fn.store_only = True  # type: ignore[attr-defined]
    fn.counter = counter  # type: ignore[attr-defined]
    return fn
