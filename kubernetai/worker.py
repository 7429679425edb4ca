"""A ``--workers`` process: ``python -m kubernetai.worker SPEC`` (started by workers.py, never by hand).

It builds the same Corefile as the primary, in worker mode: stanzas are
copies fed through the channel (replica.py), no HTTP listener, no watch, no
credentials read.  It serves the sockets the primary made for it and stops
when the primary goes away.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from kubernetai import startup_gc

startup_gc.relax()  # as twistd kubernetai does (tap.py)

from twisted.internet import defer, task  # noqa: E402
from twisted.logger import FileLogObserver, LogLevel, formatEvent, globalLogBeginner  # noqa: E402

from kubernetai.cluster.replica import apply_ops  # noqa: E402
from kubernetai.workers import METER_EVERY, Channel, adopt_channel  # noqa: E402


def _line(event: dict) -> str:
    level = event.get("log_level", LogLevel.info)
    text = formatEvent(event)
    if event.get("log_failure") is not None:
        text += "\n" + event["log_failure"].getTraceback()
    namespace = event.get("log_namespace", "-")
    return f"[{'-' if namespace == 'log_legacy' else namespace}#{level.name}] {text}\n"


def run(spec: dict[str, Any]) -> None:
    """Serve until the primary goes away; the Corefile's text comes first on the channel."""
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stderr, _line)], redirectStandardIO=False)
    worker = _Worker(spec, reactor)
    worker.channel = adopt_channel(
        reactor, socket.socket(fileno=spec["channel"]), Channel(worker.received, on_lost=worker.primary_gone)
    )
    reactor.run()


class _Worker:
    """One worker process: builds the primary's Corefile text, then applies what the primary sends."""

    def __init__(self, spec: dict[str, Any], reactor: Any) -> None:
        self.spec = spec
        self.reactor = reactor
        self.channel: Channel | None = None
        self.plan: Any = None
        self.stanzas: dict[str, Any] = {}

    def received(self, message: Any) -> None:
        if message[0] == "corefile":
            self._start(message[1])
            return
        stanza = self.stanzas.get(message[1]) if message[0] in ("ops", "down") else None
        if stanza is None:
            return
        if message[0] == "ops":
            apply_ops(stanza.store, message[2])
        else:
            stanza.replica_down_since = message[2]

    def primary_gone(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def _start(self, text: str) -> None:
        from kubernetai.build import KubernetaiService, load_text

        spec, reactor = self.spec, self.reactor
        self.plan = plan = load_text(text, spec["dns_port"], reactor, file=spec["config"], worker=True)
        inherited = {(a, p): (udp, tcp, family) for a, p, udp, tcp, family in spec["listeners"]}
        service = KubernetaiService(plan, reactor, inherited=inherited, freeze_gc=True)
        self.stanzas = {stanza.opts.name(): stanza for stanza in plan.server.clusters}
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        waits = [stanza.when_synced() for stanza in plan.server.clusters]
        defer.gatherResults(waits).addCallback(lambda _: self._send(("ready",)))
        meters = task.LoopingCall(self._send_meters)
        meters.clock = reactor
        meters.start(METER_EVERY, now=False)

    def _send(self, message: Any) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def _send_meters(self) -> None:
        plan = self.plan
        metrics = plan.server.metrics
        meters = {s: (m.counts, m.sums) for s, m in metrics.meters.items()} if metrics is not None else {}
        caches = {
            s: {"entries": len(c), "hits": c.hits, "misses": c.misses, "evictions": c.evictions}
            for s, c in plan.server.answer_caches.items()
        }
        self._send(("meter", meters, caches))


def main() -> None:
    run(json.loads(sys.argv[1]))


if __name__ == "__main__":
    main()
