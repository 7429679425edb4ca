"""``whoami``: answer any name with the client's address and port, as CoreDNS's whoami.

The additional section holds ``<name> A|AAAA <client address>`` and
``_udp|_tcp.<name> SRV 0 0 <client port> .``; the answer section is empty.
Useful to check what address a client reaches the server from.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.names import common, dns

from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.request import current_request
from kubernetai.values import arg_count, no_block


class WhoamiResolver(common.ResolverBase):
    plugin_name = "whoami"  # the ``plugin`` label of coredns_dns_responses_total

    def _lookup(self, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        info = current_request()
        host, port = info.host, info.port
        extra = []
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0]) if host else None
        except ValueError:
            ip = None
        if ip is not None:
            if ip.version == 4:
                extra.append(dns.RRHeader(name, dns.A, dns.IN, 0, dns.Record_A(str(ip), 0)))
            else:
                extra.append(dns.RRHeader(name, dns.AAAA, dns.IN, 0, dns.Record_AAAA(str(ip), 0)))
            srv_owner = f"_{info.proto}.".encode() + name if name else f"_{info.proto}".encode()
            extra.append(dns.RRHeader(srv_owner, dns.SRV, dns.IN, 0, dns.Record_SRV(0, 0, port, b"", 0)))
        return defer.succeed(([], [], extra))


def setup(d: Directive, ctx: SetupContext) -> WhoamiResolver:
    ctx.once(d)
    arg_count(d, 0, 0)
    no_block(d)
    return WhoamiResolver()
