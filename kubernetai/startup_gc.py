"""Fewer cyclic collections while a kubernetai process starts.

Start-up allocates a great deal that lives as long as the process (modules,
classes, the first list of every cluster) and almost no garbage cycles: with
Python's default threshold (a young collection every 700 allocations) the
collector scans that again and again, ~5 ms of a 0.3 s start on a small
cluster (bench/startup.py) and more during a large first sync.  ``twistd
kubernetai`` and the workers raise the threshold until the first sync
(``restore``), then freeze what start-up made (build.py).
"""

from __future__ import annotations

import gc

STARTUP_THRESHOLD = 50_000  # young collections during start-up: cycles are still collected, 70x less often

_saved: tuple[int, ...] | None = None


def relax() -> None:
    """Collect young objects every ``STARTUP_THRESHOLD`` allocations until ``restore()``."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(max(STARTUP_THRESHOLD, _saved[0]), *_saved[1:])


def restore() -> None:
    """The thresholds from before ``relax()`` (a no-op without it)."""
    global _saved
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
