"""Handing freed heap back to the operating system after a big parse (glibc's malloc_trim)."""

from __future__ import annotations

__all__ = ["release_memory"]


def release_memory() -> None:
    """Return the heap a parse freed to the OS (glibc); a no-op elsewhere.

    A list of thousands of objects leaves megabytes of freed but resident
    heap behind (the page's bytes and text, the parser's tables); the
    compact objects kept are a small part of it.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
