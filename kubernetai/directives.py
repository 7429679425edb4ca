"""The directive registry: Corefile names → setup callables, in plugin order.

As in CoreDNS's plugin.cfg, the order of directives in a server block does
not matter: resolvers join the chain in the order of ``ORDER``.  Several
uses of one directive (e.g. many ``kubernetai`` stanzas) keep their Corefile
order.  Third-party packages add directives through the entry-point group
``kubernetai.directives``; their resolvers go just before ``forward``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from twisted.logger import Logger

from kubernetai.plugin import Setup

__all__ = ["ENTRY_POINT_GROUP", "ORDER", "BUILTIN", "registry", "order_of"]

ENTRY_POINT_GROUP = "kubernetai.directives"

# The subset of CoreDNS's plugin.cfg (1.15) order that we implement.
ORDER = [
    "reload",
    "bind",
    "ready",
    "health",
    "prometheus",
    "errors",
    "log",
    "any",
    "loadbalance",
    "autopath",
    "acl",
    "cache",
    "transfer",
    "hosts",
    "k8s_external",
    "kubernetai",  # and "kubernetes", its other name: the same place, Corefile order between them
    "loop",
    "forward",
    "whoami",
]


class Lazy:
    """A built-in directive's setup, imported the first time a Corefile uses it.

    Start-up pays only for the plugins the Corefile names (twisted.web for
    health/ready/prometheus, the cache, forward…); setup runs before twistd
    drops privileges, so the import still happens while the code is readable.
    """

    def __init__(self, module: str, name: str = "setup") -> None:
        self.module = module
        self.name = name
        self._setup: Any = None

    def __call__(self, directive: Any, ctx: Any) -> object | None:
        if self._setup is None:
            self._setup = getattr(importlib.import_module(self.module), self.name)
        return self._setup(directive, ctx)

    def __repr__(self) -> str:
        return f"<directive {self.module}.{self.name}>"


def _builtin(name: str, attr: str = "setup") -> Lazy:
    return Lazy(f"kubernetai.plugins.{name}", attr)


BUILTIN: dict[str, Setup] = {
    "bind": _builtin("bind"),
    "ready": _builtin("ready"),
    "health": _builtin("health"),
    "prometheus": _builtin("prometheus"),
    "errors": _builtin("errors"),
    "log": _builtin("log"),
    "hosts": _builtin("hosts"),
    "kubernetai": _builtin("kubernetai"),
    "kubernetes": _builtin("kubernetai", "setup_kubernetes"),
    "any": _builtin("any"),
    "acl": _builtin("acl"),
    "cache": _builtin("cache"),
    "reload": _builtin("reload"),
    "loop": _builtin("loop"),
    "loadbalance": _builtin("loadbalance"),
    "forward": _builtin("forward"),
    "whoami": _builtin("whoami"),
    "transfer": _builtin("transfer"),
    "k8s_external": _builtin("k8s_external"),
    "autopath": _builtin("autopath"),
}

_log = Logger()


class Directives(Mapping[str, Setup]):
    """Built-in directives, plus those installed packages register.

    Installed packages' entry points are read only when a name is not
    built in (or the whole list is wanted): a Corefile of built-in
    directives starts without scanning every distribution's metadata.
    """

    def __init__(self) -> None:
        self._found: dict[str, Setup] = dict(BUILTIN)
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._found:
                _log.warn("directive {name} from {value} ignored: already registered", name=ep.name, value=ep.value)
                continue
            try:
                self._found[ep.name] = ep.load()
            except Exception:
                _log.failure("cannot load directive {name} from {value}", name=ep.name, value=ep.value)

    def __contains__(self, name: object) -> bool:
        if name not in self._found:
            self._scan()
        return name in self._found

    def __getitem__(self, name: str) -> Setup:
        if name not in self._found:
            self._scan()
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        self._scan()
        return iter(self._found)

    def __len__(self) -> int:
        self._scan()
        return len(self._found)


def registry() -> Directives:
    """Built-in directives plus those installed packages register."""
    return Directives()


def order_of(name: str, directives: Mapping[str, Setup]) -> float:
    """Sort key: built-ins by ORDER, third-party ones just before ``forward``."""
    if name == "kubernetes":
        name = "kubernetai"
    if name in ORDER:
        return ORDER.index(name)
    return ORDER.index("forward") - 0.5  # third-party resolvers: just before forward
