"""``kubernetai [ZONES...] { OPTIONS }``: one Kubernetes cluster's records.

Options are those of CoreDNS's kubernetes plugin (see options.py).  The
stanza's watchers run as services; its resolver joins the block's chain in
Corefile order among the other stanzas; it reports ready once synced, and
the server holds queries up to ``startup_timeout`` for its first sync.
"""

from __future__ import annotations

import attrs

from kubernetai.cluster.kubeconfig import ConfigError, connection_for
from kubernetai.cluster.options import KubernetesOptions, parse_options
from kubernetai.cluster.stanza import KubernetesCluster
from kubernetai.corefile import Directive
from kubernetai.hostaddrs import own_addresses
from kubernetai.plugin import SetupContext


def setup(d: Directive, ctx: SetupContext) -> KubernetesCluster:
    opts = _named(d, parse_options(d, ctx.zones), ctx)
    # Our own addresses (NS records and their glue): the bound ones, else the
    # host's; loopback ones never, as CoreDNS.
    local_ips = own_addresses(ctx.bind)
    if opts.manifests:
        stanza = KubernetesCluster.from_manifests(opts, ctx.reactor, local_ips)
    else:
        try:
            conn = connection_for(opts, ctx.reactor)
        except ConfigError as e:
            raise d.error(str(e)) from None
        stanza = KubernetesCluster.from_api(opts, conn, ctx.reactor, local_ips)
    ctx.server.add_service(stanza)
    ctx.server.readiness.add(opts.name(), lambda: stanza.ready)
    ctx.server.status[opts.name()] = stanza.status
    ctx.server.startup.append(stanza)
    ctx.server.clusters.append(stanza)
    ctx.chain_users.append(stanza)
    return stanza


def _named(d: Directive, opts: KubernetesOptions, ctx: SetupContext) -> KubernetesOptions:
    """Give the stanza a name no other stanza has (metrics and /status tell them apart by it)."""
    taken: dict[str, str] = ctx.server.shared("kubernetai stanza names", dict)
    name = opts.name()
    if name in taken:
        if opts.given_name:
            raise d.error(f"name {name!r} is already the name of the stanza at {taken[name]}")
        n = 2
        while f"{name}#{n}" in taken:
            n += 1
        name = f"{name}#{n}"
        opts = attrs.evolve(opts, given_name=name)
    taken[name] = f"{d.file}:{d.line}"
    return opts
