"""``health [ADDRESS] { lameduck DURATION }``: HTTP /health, 200 while the process runs.

It stays 200 while a Kubernetes API is down: we keep serving the last good
data, so the process is healthy.  On shutdown with ``lameduck`` it answers
503 and keeps serving DNS for DURATION before the listeners close.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from kubernetai import wire
from kubernetai.corefile import Directive
from kubernetai.plugin import SetupContext
from kubernetai.plugins.http import Page, mount
from kubernetai.values import arg_count, check_known, duration

DEFAULT_ADDRESS = ":8080"


@attrs.define
class Health:
    lameduck: float = 0.0
    stopping: bool = False

    def page(self) -> tuple[int, str, bytes]:
        if self.stopping:
            return 503, "text/plain", b"lameduck"
        broken = wire.self_test()  # healthy means able to answer, not just running
        if broken:
            return 503, "text/plain", f"cannot encode answers: {broken}".encode()
        return 200, "text/plain", b"OK"

    def start_lameduck(self, clock: IReactorTime) -> defer.Deferred:
        self.stopping = True
        return task.deferLater(clock, self.lameduck, lambda: None)


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    args = arg_count(d, 0, 1)
    check_known(d, {"lameduck"})
    health = Health()
    for child in d.children:
        health.lameduck = duration(child, arg_count(child, 1, 1)[0])
    mount(ctx, d, args[0] if args else DEFAULT_ADDRESS, b"health", Page(health.page))
    if health.lameduck:
        ctx.server.pre_stop.append(lambda: health.start_lameduck(ctx.reactor))
