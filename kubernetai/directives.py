"""The directive registry: Corefile names → setup callables, in plugin order.

As in CoreDNS's plugin.cfg, the order of directives in a server block does
not matter: resolvers join the chain in the order of ``ORDER``.  Several
uses of one directive (e.g. many ``kubernetai`` stanzas) keep their Corefile
order.  Third-party packages add directives through the entry-point group
``kubernetai.directives``; their resolvers go just before ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from twisted.logger import Logger

from kubernetai.plugin import Setup
from kubernetai.plugins import (
    autopath,
    bind,
    errors,
    forward,
    health,
    hosts,
    kubernetai,
    log,
    prometheus,
    ready,
    transfer,
    whoami,
)

__all__ = ["ENTRY_POINT_GROUP", "ORDER", "BUILTIN", "registry", "order_of"]

ENTRY_POINT_GROUP = "kubernetai.directives"

# The subset of CoreDNS's plugin.cfg order that we implement.
ORDER = [
    "bind",
    "ready",
    "health",
    "prometheus",
    "errors",
    "log",
    "autopath",
    "transfer",
    "hosts",
    "kubernetai",
    "forward",
    "whoami",
]

BUILTIN: dict[str, Setup] = {
    "bind": bind.setup,
    "ready": ready.setup,
    "health": health.setup,
    "prometheus": prometheus.setup,
    "errors": errors.setup,
    "log": log.setup,
    "hosts": hosts.setup,
    "kubernetai": kubernetai.setup,
    "forward": forward.setup,
    "whoami": whoami.setup,
    "transfer": transfer.setup,
    "autopath": autopath.setup,
}

_log = Logger()


def registry() -> dict[str, Setup]:
    """Built-in directives plus those installed packages register."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            _log.warn("directive {name} from {value} ignored: already registered", name=ep.name, value=ep.value)
            continue
        try:
            found[ep.name] = ep.load()
        except Exception:
            _log.failure("cannot load directive {name} from {value}", name=ep.name, value=ep.value)
    return found


def order_of(name: str, directives: Mapping[str, Setup]) -> float:
    """Sort key: built-ins by ORDER, third-party ones just before ``forward``."""
    if name in ORDER:
        return ORDER.index(name)
    return ORDER.index("forward") - 0.5  # third-party resolvers: just before forward
