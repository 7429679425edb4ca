"""``hosts [FILE [ZONES...]] { INLINE; ttl; no_reverse; reload; fallthrough }``.

Serves A/AAAA (and PTR unless ``no_reverse``) from a hosts file and inline
entries, kept in memory and re-read when the file changes.  Unlike
CoreDNS, which answers SERVFAIL for an unknown name because a hosts file
has no SOA, we answer NXDOMAIN (with a synthesised SOA below the root).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import time
from collections.abc import Iterator

import attrs
from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns

from kubernetai import outcome
from kubernetai.corefile import Directive
from kubernetai.fallthrough import Fallthrough
from kubernetai.lazy_repr import LazyRepr
from kubernetai.plugin import SetupContext
from kubernetai.question import Question, ZoneResolver
from kubernetai.rr import soa
from kubernetai.values import arg_count, duration, integer, zone_args
from kubernetai.zones import normalize

log = Logger(namespace="kubernetai.hosts")
PROPERTIES = {"ttl", "no_reverse", "reload", "fallthrough"}


@attrs.define(repr=False)
class HostsTable(LazyRepr):
    """name → addresses and reverse name → names, from text lines."""

    v4: dict[str, list[str]] = attrs.Factory(dict)
    v6: dict[str, list[str]] = attrs.Factory(dict)
    ptr: dict[str, list[str]] = attrs.Factory(dict)

    def add(self, ip_text: str, names: list[str]) -> bool:
        try:
            ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
        except ValueError:
            return False
        table = self.v4 if ip.version == 4 else self.v6
        for name in names:
            name = normalize(name)
            table.setdefault(name, [])
            if str(ip) not in table[name]:
                table[name].append(str(ip))
            rev = normalize(ip.reverse_pointer)
            self.ptr.setdefault(rev, [])
            if name not in self.ptr[rev]:
                self.ptr[rev].append(name)
        return True

    def add_lines(self, text: str) -> None:
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2:
                self.add(fields[0], fields[1:])

    def knows(self, name: str) -> bool:
        return name in self.v4 or name in self.v6 or name in self.ptr


MAX_HOSTS_FILE = 16 * 2**20  # a hosts file of a million names is about 30 MB; this is plenty


def file_problem(st: os.stat_result | None) -> str:
    """Why a hosts file cannot be read (not a regular file, too large), or ''."""
    if st is not None and not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st is None or st.st_size > MAX_HOSTS_FILE:
        return f"larger than {MAX_HOSTS_FILE // 2**20} MiB"
    return ""


@attrs.define(repr=False)
class HostsResolver(ZoneResolver, LazyRepr):
    """An IResolver over a hosts file plus inline entries."""

    plugin_name = "hosts"  # the ``plugin`` label of coredns_dns_responses_total

    zones: tuple[str, ...]
    path: str | None = None
    inline: list[tuple[str, list[str]]] = attrs.Factory(list)
    ttl: int = 3600
    reverse: bool = True
    fallthrough: Fallthrough = Fallthrough()
    table: HostsTable = attrs.Factory(HostsTable)
    version: int = 0  # bumped whenever the table is replaced
    reloaded_at: float = 0.0  # when the table was last (re)built, Unix time
    _stamp: tuple | None = None  # (mtime, size, inode) of the file last read
    _loaded: bool = False
    _failing: bool = False

    def __attrs_post_init__(self) -> None:
        ZoneResolver.__init__(self)
        self.reload()

    def reload(self) -> None:
        """Re-read the file when its mtime/size changed; keep the old table on error."""
        text = ""
        if self.path:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._loaded and stamp == self._stamp:
                    return
                problem = file_problem(st)
                if problem:
                    raise OSError(0, problem)
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    text = f.read(MAX_HOSTS_FILE + 1)
                if len(text) > MAX_HOSTS_FILE:
                    raise OSError(0, file_problem(None))
                self._stamp, self._failing = stamp, False
            except OSError as e:
                if not self._failing:
                    log.warn("hosts: cannot read {path}: {error}", path=self.path, error=e.strerror)
                self._stamp, self._failing = None, True
                if self.table.v4 or self.table.v6:
                    return
        elif self._loaded:
            return
        table = HostsTable()
        for ip, names in self.inline:
            table.add(ip, names)
        table.add_lines(text)
        self.table = table
        self.version += 1
        self._loaded = True
        self.reloaded_at = time.time()

    def metrics(self) -> Iterator[Metric]:
        """CoreDNS's hosts families: entries (per file) and the last reload time."""
        entries = GaugeMetricFamily(
            "coredns_hosts_entries", "The combined number of entries in hosts and Corefile.", labels=["hostsfile"]
        )
        t = self.table
        entries.add_metric([self.path or ""], len(t.v4) + len(t.v6))
        yield entries
        stamp = GaugeMetricFamily(
            "coredns_hosts_reload_timestamp_seconds", "The timestamp of the last reload of hosts file."
        )
        stamp.add_metric([], self.reloaded_at)
        yield stamp

    def cache_version(self) -> int:
        """Our answers depend only on the current table (replaced on each reload)."""
        return self.version

    def lookup_in_zone(self, q: Question, name: bytes, cls: int, type: int, timeout: object) -> defer.Deferred:
        key = q.lname
        t = self.table
        found: list[dns.IEncodableRecord]
        if type == dns.PTR and not self.reverse:
            found = []
        elif type == dns.A:
            found = [dns.Record_A(ip, self.ttl) for ip in t.v4.get(key, ())]
        elif type == dns.AAAA:
            found = [dns.Record_AAAA(ip, self.ttl) for ip in t.v6.get(key, ())]
        elif type == dns.PTR:
            found = [dns.Record_PTR(n.rstrip("."), self.ttl) for n in t.ptr.get(key, ())]
        else:
            found = []
        if found:
            owner = q.name.rstrip(".")
            return defer.succeed(([dns.RRHeader(owner, type, dns.IN, self.ttl, r, auth=True) for r in found], [], []))
        authority = [] if q.lzone == "." else [soa(q.zone, self.ttl, 0)]
        known = t.knows(key) and (type != dns.PTR or self.reverse)
        if known:
            return defer.succeed(([], authority, []))
        if self.fallthrough.through(key):
            return defer.fail(outcome.FallthroughNXDomain(name, authority))
        return defer.fail(outcome.NXDomain(name, authority))


def parse(d: Directive, block_zones: tuple[str, ...]) -> tuple[HostsResolver, float]:
    args = d.args
    path = args[0] if args else "/etc/hosts"
    zones = zone_args(d, args[1:])
    if path and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(d.file)), path)
    try:
        problem = file_problem(os.stat(path))
    except OSError:
        problem = ""  # a missing file is read when it appears, as CoreDNS
    if problem:
        raise d.error(f"{args[0] if args else path}: {problem}")
    ttl, reverse, reload_period, fall = 3600, True, 5.0, Fallthrough()
    inline: list[tuple[str, list[str]]] = []
    for child in d.children:
        if child.name == "ttl":
            ttl = integer(child, arg_count(child, 1, 1)[0], 1, 2**31 - 1, "ttl")
        elif child.name == "no_reverse":
            arg_count(child, 0, 0)
            reverse = False
        elif child.name == "reload":
            reload_period = duration(child, arg_count(child, 1, 1)[0])
        elif child.name == "fallthrough":
            fall = Fallthrough.parse(child)
        else:
            try:
                ipaddress.ip_address(child.name.split("%", 1)[0])
            except ValueError:
                raise child.error(
                    "unknown property or invalid inline entry "
                    f"(known: {', '.join(sorted(PROPERTIES))}, or 'IP NAME...')"
                ) from None
            if not child.args:
                raise child.error("inline entry needs at least one name after the address")
            inline.append((child.name, list(child.args)))
    resolver = HostsResolver(tuple(zones) or block_zones, path, inline, ttl, reverse, fall)
    return resolver, reload_period


def setup(d: Directive, ctx: SetupContext) -> HostsResolver:
    ctx.once(d)
    resolver, period = parse(d, ctx.zones)
    ctx.server.metric_sources.append(resolver.metrics)
    if period > 0 and resolver.path:
        timer = TimerService(period, resolver.reload)
        timer.clock = ctx.reactor
        ctx.server.add_service(timer)
    return resolver
