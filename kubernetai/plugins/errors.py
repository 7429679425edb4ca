"""``errors``: log why a query got SERVFAIL (or another error from a plugin).

``errors { stacktrace; consolidate DURATION REGEXP [warning|error|info|debug] }``.
Consolidated errors are counted and logged once per period, as CoreDNS does.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.plugin import SetupContext
from kubernetai.request import QueryEvent
from kubernetai.values import arg_count, check_known, duration

log = Logger(namespace="kubernetai.errors")
LEVELS = {"warning", "error", "info", "debug"}


@attrs.define(repr=False)
class Consolidation(LazyRepr):
    period: float
    pattern: re.Pattern
    level: str
    count: int = 0


@attrs.define(repr=False)
class ErrorLogger(LazyRepr):
    clock: IReactorTime
    stacktrace: bool = False
    rules: list[Consolidation] = attrs.Factory(list)

    def __call__(self, event: QueryEvent) -> None:
        if event.failure is None:
            return
        why = event.failure.getErrorMessage() or getattr(event.failure.type, "__name__", "error")
        message = f"{event.id} {event.qname} {event.type_name}: {why}"
        for rule in self.rules:
            if rule.pattern.search(message):
                if rule.count == 0:
                    self.clock.callLater(rule.period, self._flush, rule)
                rule.count += 1
                return
        if self.stacktrace:
            log.failure("plugin/errors: {message}", event.failure, message=message)
        else:
            log.error("plugin/errors: {message}", message=message)

    def _flush(self, rule: Consolidation) -> None:
        n, rule.count = rule.count, 0
        emit = {"warning": log.warn, "error": log.error, "info": log.info, "debug": log.debug}[rule.level]
        emit(
            "plugin/errors: {n} errors like '{pattern}' occurred in last {period}s",
            n=n,
            pattern=rule.pattern.pattern,
            period=rule.period,
        )


def parse(d: Directive, clock: IReactorTime) -> ErrorLogger:
    arg_count(d, 0, 0)
    check_known(d, {"stacktrace", "consolidate"})
    logger = ErrorLogger(clock)
    for child in d.children:
        if child.name == "stacktrace":
            arg_count(child, 0, 0)
            logger.stacktrace = True
            continue
        args = arg_count(child, 2, 3)
        try:
            pattern = re.compile(args[1])
        except re.error as e:
            raise child.error(f"invalid regular expression {args[1]!r}: {e}") from None
        level = args[2] if len(args) == 3 else "error"
        if level not in LEVELS:
            raise child.error(f"unknown log level {level!r} (allowed: {', '.join(sorted(LEVELS))})")
        logger.rules.append(Consolidation(duration(child, args[0]), pattern, level))
    return logger


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.once(d)
    ctx.add_observer(parse(d, ctx.reactor))
