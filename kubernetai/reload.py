"""Reloading the Corefile without losing a query: SIGUSR1 (and SIGHUP), and the ``reload`` directive.

A reload builds the new configuration completely first (``load`` with the
running plan as ``previous``): a bad Corefile is logged, counted
(``coredns_reload_failed_total``) and changes nothing.  A good one keeps
what did not change: a ``kubernetai`` stanza defined exactly as before is
the same object, with its store and watches; listeners on addresses that stay
stay open.  Stanzas that are new or changed start and sync (up to their
``startup_timeout``) while the old configuration still answers; then the
server swaps blocks between two queries (``KubernetaiService.adopt``) and
stops what the new configuration no longer has.
"""

from __future__ import annotations

import hashlib
import random
import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from kubernetai.corefile import CorefileError

__all__ = ["Reloader", "checksum"]

log = Logger()


def checksum(path: str) -> str:
    """CoreDNS's reload checksum: SHA-512 of the Corefile as written ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha512(f.read()).hexdigest()
    except OSError:
        return ""


class Reloader(Service):
    """Reloads a KubernetaiService on signals and, with ``reload``, when the Corefile's checksum changes."""

    name = "reload"

    def __init__(self, service: Any, path: str, rand: Callable[[], float] = random.random) -> None:
        self.service = service
        self.path = path
        self.rand = rand
        self.digest = checksum(path)
        self.failed = 0
        self.reloads = 0
        self._running: defer.Deferred | None = None
        self._again: str = ""  # a reason to reload once the one running ends
        self._timer: Any = None
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ service
    def startService(self) -> None:
        Service.startService(self)
        self._install_signals()
        self._schedule()

    def stopService(self) -> Any:
        Service.stopService(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()
        return self._running

    def _install_signals(self) -> None:
        reactor = self.service.reactor
        try:
            for signum in (signal.SIGUSR1, signal.SIGHUP):
                self._old_handlers[signum] = signal.signal(
                    signum, lambda n, frame: reactor.callFromThread(self.reload, signal.Signals(n).name)
                )
            self._old_handlers[signal.SIGUSR2] = signal.signal(
                signal.SIGUSR2, lambda n, frame: reactor.callFromThread(self._ignored, "SIGUSR2")
            )
        except ValueError:  # not the main thread (embedded): no signals, the directive still works
            pass

    def _ignored(self, name: str) -> None:
        log.info(
            "kubernetai: {name} received and ignored (CoreDNS restarts gracefully on it; here SIGUSR1 reloads)",
            name=name,
        )

    def _schedule(self) -> None:
        every = self.service.plan.server.reload_every
        if every is None or not self.running:
            return
        interval, jitter = every
        delay = max(1.0, interval + (2 * self.rand() - 1) * jitter)
        self._timer = self.service.reactor.callLater(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        if checksum(self.path) != self.digest:
            self.reload("the Corefile changed").addBoth(lambda _: self._schedule())
        else:
            self._schedule()

    # ------------------------------------------------------------------ reloading
    def reload(self, why: str = "requested") -> defer.Deferred:
        """Reload now (or right after the reload running); never fails."""
        if self._running is not None:
            self._again = why
            return self._running
        self._running = self._reload(why)
        return self._running.addBoth(self._done)

    def _done(self, result: Any) -> Any:
        self._running = None
        if isinstance(result, Failure):
            self.failed += 1
            log.failure("kubernetai: reload failed", result)
        if self._again:
            why, self._again = self._again, ""
            self.reload(why)
        return None

    @defer.inlineCallbacks
    def _reload(self, why: str) -> Any:
        service = self.service
        digest = checksum(self.path)
        log.info("kubernetai: reloading the Corefile ({why})", why=why)
        try:
            plan = service.loader(service.plan)
        except CorefileError as e:
            self.failed += 1
            metrics = service.plan.server.metrics
            if metrics is not None:
                metrics.reload_failed += 1
            for line in str(e).splitlines():
                log.error("kubernetai: reload failed, the running configuration keeps serving: {line}", line=line)
            return
        except Exception:
            self.failed += 1
            log.failure("kubernetai: reload failed, the running configuration keeps serving")
            return
        running = set(service.plan.server.clusters)
        fresh = [c for c in plan.server.clusters if c not in running]
        for stanza in fresh:
            stanza.setServiceParent(service)  # starts its watches while the old configuration answers
        if fresh:
            synced = yield defer.gatherResults([s.wait_synced(service.reactor) for s in fresh])
            for ok, stanza in zip(synced, fresh, strict=True):
                if not ok:
                    log.warn(
                        "{name}: not synced after startup_timeout; serving the new configuration anyway",
                        name=stanza.opts.name(),
                    )
        yield service.adopt(plan)
        self.digest = digest
        self.reloads += 1
        if plan.server.metrics is not None:
            plan.server.metrics.config_hash = digest
        kept = len(plan.server.clusters) - len(fresh)
        log.info(
            "kubernetai: reloaded ({kept} cluster(s) kept as they were, {fresh} started)", kept=kept, fresh=len(fresh)
        )
