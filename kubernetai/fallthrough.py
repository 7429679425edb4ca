"""``fallthrough [ZONES...]``: which NXDOMAINs may pass to the next resolver."""

from __future__ import annotations

import attrs

from kubernetai.corefile import Directive
from kubernetai.zones import ZoneError, is_subdomain, zones_of


@attrs.frozen
class Fallthrough:
    """No zones = off; ``(".",)`` = every name."""

    zones: tuple[str, ...] = ()

    def through(self, qname: str) -> bool:
        return any(is_subdomain(qname, z) for z in self.zones)

    @classmethod
    def parse(cls, d: Directive) -> "Fallthrough":
        if not d.args:
            return cls((".",))
        zones: list[str] = []
        try:
            for arg in d.args:
                zones.extend(zones_of(arg))
        except ZoneError as e:
            raise d.error(str(e)) from None
        return cls(tuple(zones))
