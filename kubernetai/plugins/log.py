"""``log``: one line per query in CoreDNS's log format.

``log [NAMES...] [FORMAT] { class success|denial|error|all }``; the
default line is CoreDNS's::

    127.0.0.1:52733 - 11754 "A IN svc.ns.svc.cluster.local. udp 29 false 512" NOERROR qr,aa,rd 106 0.0001s
"""

from __future__ import annotations

import re

import attrs
from twisted.logger import Logger
from twisted.names import dns

from kubernetai.corefile import Directive
from kubernetai.lazy_repr import LazyRepr
from kubernetai.plugin import SetupContext
from kubernetai.request import QueryEvent, rcode_name
from kubernetai.values import check_known
from kubernetai.zones import is_subdomain, normalize

log = Logger(namespace="kubernetai.log")

COMMON = (
    '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
    "{rcode} {>rflags} {rsize} {duration}"
)
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = {"success", "denial", "error", "all"}

_FIELD = re.compile(r"\{(>?[a-z]+)\}")


def classify(event: QueryEvent) -> str:
    """CoreDNS's response class: success, denial (NXDOMAIN/NODATA) or error."""
    if event.rcode == dns.ENAME or (event.rcode == dns.OK and event.ancount == 0):
        return "denial"
    if event.rcode == dns.OK:
        return "success"
    return "error"


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s" if seconds else "0s"


def fields(event: QueryEvent) -> dict[str, str]:
    return {
        "remote": event.remote,
        "port": str(event.port),
        ">id": str(event.id),
        "type": event.type_name,
        "class": event.class_name,
        "name": event.qname,
        "proto": event.proto,
        "size": str(event.size),
        ">do": "true" if event.do else "false",
        ">bufsize": str(event.bufsize),
        "rcode": rcode_name(event.rcode),
        ">rflags": event.flags,
        "rsize": str(event.rsize),
        "duration": _duration(event.duration),
        ">opcode": "QUERY",
    }


def render(fmt: str, event: QueryEvent) -> str:
    values = fields(event)
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), fmt)


@attrs.frozen(repr=False)
class LogRule(LazyRepr):
    names: tuple[str, ...]
    fmt: str
    classes: frozenset[str]

    def __call__(self, event: QueryEvent) -> None:
        name = event.qname.lower()
        if not any(is_subdomain(name, n) for n in self.names):
            return
        if "all" not in self.classes and classify(event) not in self.classes:
            return
        # No "[INFO]" of our own: twistd's observer already says the level ("[kubernetai.log#info]").
        log.info("{line}", line=render(self.fmt, event))


def parse(d: Directive) -> LogRule:
    args = list(d.args)
    fmt = COMMON
    if len(args) > 1 and "{" in args[-1]:
        fmt = args.pop().replace("{common}", COMMON).replace("{combined}", COMBINED)
    names = tuple(normalize(a) for a in args) or (".",)
    check_known(d, {"class"})
    classes: set[str] = set()
    for child in d.children:
        if not child.args:
            raise child.error("wrong argument count: class needs at least one of success, denial, error, all")
        for c in child.args:
            if c not in CLASSES:
                raise child.error(f"unknown class {c!r} (allowed: {', '.join(sorted(CLASSES))})")
            classes.add(c)
    return LogRule(names, fmt, frozenset(classes or {"all"}))


def setup(d: Directive, ctx: SetupContext) -> None:
    ctx.add_observer(parse(d))
