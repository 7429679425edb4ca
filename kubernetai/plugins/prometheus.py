"""``prometheus [ADDRESS]``: metrics at http://ADDRESS/metrics, CoreDNS's directive.

Default ``localhost:9153``.  The queries of every server block that has the
directive are counted under CoreDNS's metric names, labels and buckets; one
listener serves each address, whichever blocks name it, and every listener
shows every metric (the per-cluster ones and the plugins' included).  See
``kubernetai.metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web import resource, server

from kubernetai.corefile import Directive
from kubernetai.metrics import Metrics
from kubernetai.plugin import SetupContext
from kubernetai.plugins.http import mount
from kubernetai.values import arg_count, no_block

DEFAULT_ADDRESS = "localhost:9153"


class MetricsPage(resource.Resource):
    """/metrics, rendered by prometheus_client on the reactor thread.

    prometheus_client's own ``twisted.MetricsResource`` collects in a thread
    of the reactor's pool, while our counters change on the reactor thread:
    collecting here gives a consistent snapshot, and costs a few
    milliseconds per scrape.  The format (text or OpenMetrics, as the
    scraper's Accept header asks) is prometheus_client's.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        accept = request.getHeader("accept") or ""
        encode, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode())
        return encode(self.registry)


def metrics_of(ctx: SetupContext) -> Metrics:
    """The Corefile's one ``Metrics`` (made by the first ``prometheus``)."""
    if ctx.server.metrics is None:
        previous = ctx.server.previous
        # A reload keeps the counters (Prometheus sees no reset) but lists this configuration's parts.
        kept = previous.metrics if previous is not None else None
        if kept is not None:
            ctx.server.metrics = kept  # bound to this configuration's parts when it is adopted
        else:
            ctx.server.metrics = Metrics(clock=ctx.reactor.seconds)
            ctx.server.metrics.bind(ctx.server)
    return ctx.server.metrics


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 1)
    no_block(d)
    metrics = metrics_of(ctx)
    address = args[0] if args else DEFAULT_ADDRESS
    if address.startswith("localhost:"):
        address = "127.0.0.1:" + address.partition(":")[2]
    mount(ctx, d, address, b"metrics", MetricsPage(metrics.registry))
    ctx.metered = True
