"""``health [ADDRESS] { lameduck DURATION }``: HTTP /health, 200 while the process runs.

It stays 200 while a Kubernetes API is down: we keep serving the last good
data, so the process is healthy.  On shutdown with ``lameduck`` it answers
503 and keeps serving DNS for DURATION before the listeners close.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kubernetai import wire
from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.metrics import SLIM_TIME_BUCKETS, Histogram
from kubernetai.plugin import SetupContext
from kubernetai.plugins.http import Page, mount
from kubernetai.values import arg_count, check_known, duration

DEFAULT_ADDRESS = ":8080"

log = Logger()


@attrs.define(repr=False)
class Health(LazyRepr):
    lameduck: float = 0.0
    stopping: bool = False

    durations: Histogram = attrs.Factory(lambda: Histogram(SLIM_TIME_BUCKETS))
    failures: int = 0

    def page(self) -> tuple[int, str, bytes]:
        started = time.monotonic()
        code, body = self._check()
        self.durations.observe(time.monotonic() - started)
        if code != 200:
            self.failures += 1
        return code, "text/plain", body

    def _check(self) -> tuple[int, bytes]:
        if self.stopping:
            return 503, b"lameduck"
        broken = wire.self_test()  # healthy means able to answer, not just running
        if broken:
            return 503, f"cannot encode answers: {broken}".encode()
        return 200, b"OK"

    def metrics(self) -> Iterator[Metric]:
        """CoreDNS's health families, over the requests /health answered."""
        durations = HistogramMetricFamily(
            "coredns_health_request_duration_seconds", "Histogram of the time (in seconds) each request took."
        )
        durations.add_metric([], self.durations.buckets(), self.durations.sum)
        yield durations
        failures = CounterMetricFamily(
            "coredns_health_request_failures", "The number of times the health check failed."
        )
        failures.add_metric([], self.failures)
        yield failures

    def start_lameduck(self, clock: IReactorTime) -> defer.Deferred:
        self.stopping = True
        log.info("health: lameduck for {seconds}s: /health answers 503, DNS still answers", seconds=self.lameduck)
        return task.deferLater(clock, self.lameduck, lambda: log.info("health: lameduck over, stopping"))


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 1)
    check_known(d, {"lameduck"})
    health = Health()
    for child in d.children:
        health.lameduck = duration(child, arg_count(child, 1, 1)[0])
    mount(ctx, d, args[0] if args else DEFAULT_ADDRESS, b"health", Page(health.page))
    ctx.server.metric_sources.append(health.metrics)
    if health.lameduck:
        ctx.server.pre_stop.append(lambda: health.start_lameduck(ctx.reactor))
