"""``fallthrough [ZONES...]``: which NXDOMAINs may pass to the next resolver."""

from __future__ import annotations

import attrs

from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.values import zone_args
from kubernetai.zones import is_subdomain


@attrs.frozen(repr=False)
class Fallthrough(LazyRepr):
    """No zones = off; ``(".",)`` = every name."""

    zones: tuple[str, ...] = ()

    def through(self, qname: str) -> bool:
        return any(is_subdomain(qname, z) for z in self.zones)

    @classmethod
    def parse(cls, d: Directive) -> Fallthrough:
        return cls(zone_args(d, d.args) if d.args else (".",))
