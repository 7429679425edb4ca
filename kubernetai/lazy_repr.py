"""A ``__repr__`` for attrs classes made when first asked, not at import.

attrs compiles a ``__repr__`` for every class when its module is imported
(~0.17 ms each on the 2-core machine: ~6 ms of the ~40 classes a Corefile's
start loads, against a 0.3 s start-up target, issue 15).  Classes declared
``@attrs.define(repr=False)`` (or ``frozen``) that inherit ``LazyRepr`` get
the same text attrs would write, fields marked ``repr=False`` (credentials)
left out the same way.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["LazyRepr"]


class LazyRepr:
    __slots__ = ()

    def __repr__(self) -> str:
        cls: Any = type(self)  # an attrs class (the subclass)
        parts = []
        for field in attrs.fields(cls):
            if field.repr is False:
                continue
            value = getattr(self, field.name, attrs.NOTHING)
            shown = field.repr(value) if callable(field.repr) else repr(value)
            parts.append(f"{field.name}={shown}")
        return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({', '.join(parts)})"
