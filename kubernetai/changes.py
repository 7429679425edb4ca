"""One process-wide count of changes to the data that store-derived cache versions read.

The answer cache checks an answer's versions on every hit.  Most answers
depend on kubernetai stores only, and stores change far less often than
queries arrive: an answer found valid at a given count is still valid while
the count is the same, so a hit costs one comparison instead of a call per
version.  Every write a store-derived version could see bumps the count
(``ClusterStore``); a version function opts in with ``store_derived``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["STORE_CHANGES", "bump", "store_derived"]

#: [count]: a list, so readers share it without a global statement or an attribute lookup.
STORE_CHANGES = [0]

F = TypeVar("F", bound=Callable)


def bump() -> None:
    """Something a store-derived version reads has changed (or may have)."""
    STORE_CHANGES[0] += 1


def store_derived(fn: F) -> F:
    """Mark ``fn`` as a cache version whose value changes only with a ``bump()``."""
    fn.store_only = True  # type: ignore[attr-defined]
    return fn
