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
    acl,
    autopath,
    bind,
    cache,
    errors,
    forward,
    health,
    hosts,
    kubernetai,
    loadbalance,
    log,
    loop,
    prometheus,
    ready,
    reload,
    transfer,
    whoami,
)
from kubernetai.plugins import any as any_plugin

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
    "kubernetai",  # and "kubernetes", its other name: the same place, Corefile order between them
    "loop",
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
    "kubernetes": kubernetai.setup_kubernetes,
    "any": any_plugin.setup,
    "acl": acl.setup,
    "cache": cache.setup,
    "reload": reload.setup,
    "loop": loop.setup,
    "loadbalance": loadbalance.setup,
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
    if name == "kubernetes":
        name = "kubernetai"
    if name in ORDER:
        return ORDER.index(name)
    return ORDER.index("forward") - 0.5  # third-party resolvers: just before forward
