"""``kubernetai [ZONES...] { OPTIONS }``: one Kubernetes cluster's records.

Options are those of CoreDNS's kubernetes plugin (see options.py).  The
stanza's watchers run as services; its resolver joins the block's chain in
Corefile order among the other stanzas; it reports ready once synced, and
the server holds queries up to ``startup_timeout`` for its first sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.logger import Logger

from kubernetai.cluster.options import KubernetesOptions, parse_options
from kubernetai.cluster.stanza import KubernetesCluster
from kubernetai.corefile import Directive
from kubernetai.hostaddrs import own_addresses
from kubernetai.plugin import SetupContext

log = Logger()


def setup(d: Directive, ctx: SetupContext) -> KubernetesCluster:
    opts = _named(d, parse_options(d, ctx.zones), ctx)
    # Our own addresses (NS records and their glue): the bound ones, else the
    # host's; loopback ones never, as CoreDNS.
    local_ips = own_addresses(ctx.bind)
    kept = _unchanged(ctx, opts, local_ips)
    if kept is not None:
        stanza = kept  # a reload that left it as it was: its store and watches go on
    elif ctx.server.worker:
        stanza = KubernetesCluster.replica(opts, ctx.reactor, local_ips)  # fed by the primary (replica.py)
    elif opts.manifests:
        stanza = KubernetesCluster.from_manifests(opts, ctx.reactor, local_ips)
    else:
        # Here, not at the top: TLS, credentials and kubeconfig support are ~5 ms of a
        # start-up that a manifests-only server need not pay.
        from kubernetai.cluster.kubeconfig import ConfigError, connection_for

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


def setup_kubernetes(d: Directive, ctx: SetupContext) -> KubernetesCluster:
    """``kubernetes``: CoreDNS's plugin name, for one stanza per block, served by kubernetai.

    So the Corefile every cluster ships for CoreDNS runs unmodified.
    """
    ctx.once(d)
    said: set[str] = ctx.server.shared("kubernetes alias logged", set)
    if not said:
        said.add("yes")
        log.info(
            "{file}:{line}: 'kubernetes' is served by kubernetai (the same options; several clusters: one "
            "'kubernetai' stanza each)",
            file=d.file,
            line=d.line,
        )
    return setup(d, ctx)


def _unchanged(ctx: SetupContext, opts: KubernetesOptions, local_ips: Sequence[str]) -> KubernetesCluster | None:
    """On a reload, the running stanza defined exactly as this one (wherever it moved in the file)."""
    previous = ctx.server.previous
    if previous is None:
        return None
    taken: list[KubernetesCluster] = ctx.server.shared("kubernetai stanzas kept", list)
    wanted = attrs.evolve(opts, file="", line=0)
    for stanza in previous.clusters:
        if stanza in taken or tuple(stanza.view.local_ips) != tuple(local_ips):
            continue
        if attrs.evolve(stanza.opts, file="", line=0) == wanted:
            taken.append(stanza)
            return stanza
    return None


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
