"""Prometheus metrics: CoreDNS's names, labels and buckets, and per-cluster ones.

Counting happens on the hot path, so it is plain: a few dict increments and
bucket indexes per query (``QueryMeter``).  ``prometheus_client`` does the
rest at scrape time: ``Metrics`` is a custom collector that turns those
counts, and the clusters' and caches' own state, into metric families, and
``prometheus_client.twisted.MetricsResource`` serves them.  Nothing is
registered in prometheus_client's global registry, so an application that
embeds kubernetai keeps its own.
"""

from __future__ import annotations

import platform
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from twisted.names import dns

import kubernetai

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# prometheus_client (and the HTTP server modules it brings) is imported only by ``Metrics``,
# which exists only for a Corefile with ``prometheus``: counting needs none of it, and a
# start without metrics is ~10 ms faster (issue 15, start-up).

__all__ = ["Metrics", "QueryMeter", "Histogram", "TIME_BUCKETS", "SIZE_BUCKETS", "qtype_label", "head"]

# CoreDNS's buckets (plugin.TimeBuckets, the dns size buckets, the kubernetes plugin's programming buckets).
TIME_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
SLIM_TIME_BUCKETS = tuple(0.00025 * 10**i for i in range(5))
SIZE_BUCKETS = (0.0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
PROGRAMMING_BUCKETS = tuple(0.001 * 2**i for i in range(20))

# Query types CoreDNS names in its ``type`` label; others are "other".
_MONITORED = ("A AAAA CNAME DNSKEY DS MX NSEC3 NSEC NS PTR RRSIG SOA SRV TXT HTTPS SVCB IXFR AXFR").split()
_TYPE_LABELS = {getattr(dns, name): name for name in _MONITORED if hasattr(dns, name)}
_TYPE_LABELS.update({64: "SVCB", 65: "HTTPS", 255: "ANY"})


def qtype_label(qtype: int) -> str:
    return _TYPE_LABELS.get(qtype, "other")


class Histogram:
    """A histogram as cheap to observe as a list index: counts per bucket and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        """Fold ``other`` (same bounds) into this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last, as prometheus_client wants them."""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((_le(bound), float(total)))
        out.append(("+Inf", float(total + self.counts[-1])))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


Head = tuple[str, str, str, bool, str, str, str, int]  # zone, proto, type, do, rcode, plugin, cluster, size bucket


def head(zone: str, proto: str, qtype: int, do: bool, rcode: str, plugin: str, cluster: str, size: int) -> Head:
    """What one kind of answer has in common; a cached answer keeps its head (see ``QueryMeter.count``)."""
    return (zone, proto, _TYPE_LABELS.get(qtype, "other"), do, rcode, plugin, cluster, bisect_left(SIZE_BUCKETS, size))


class QueryMeter:
    """What CoreDNS's ``prometheus`` plugin counts for one server (listen address).

    Per query it does one tuple-keyed increment and three additions: the
    families (requests, responses, DO, three histograms, answers per
    cluster) are all derived at scrape time from counts by (head, family,
    request-size bucket, duration bucket) and the sums per head.  A cached
    answer brings its head ready-made, so counting a hit costs about a
    microsecond (bench/README.md has the figures).
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.counts: dict[tuple[Head, str, int, int], int] = {}
        self.sums: dict[Head, list[float]] = {}  # request bytes, seconds, response bytes
        # ``--workers``: each live worker's cumulative (counts, sums) for this server, added at scrape time.
        self.workers: dict[int, tuple[dict, dict]] = {}

    def absorb(self, counts: dict, sums: dict) -> None:
        """Add another process's counts for good (a worker that ended: its counters must not go back)."""
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for h, values in sums.items():
            acc = self.sums_for(h)
            for i, v in enumerate(values):
                acc[i] += v

    def sums_for(self, h: Head) -> list[float]:
        """The running sums of one head (a cached answer keeps a reference: one lookup fewer per hit)."""
        acc = self.sums.get(h)
        if acc is None:
            acc = self.sums[h] = [0.0, 0.0, 0.0]
        return acc

    def count(
        self,
        h: Head,
        family: str,
        request_size: int,
        response_size: int,
        duration: float,
        acc: list[float] | None = None,
    ) -> None:
        key = (h, family, bisect_left(SIZE_BUCKETS, request_size), bisect_left(TIME_BUCKETS, duration))
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if acc is None:
            acc = self.sums_for(h)
        acc[0] += request_size
        acc[1] += duration
        acc[2] += response_size

    def record(
        self,
        zone: str,
        proto: str,
        family: str,
        qtype: int,
        do: bool,
        rcode: str,
        plugin: str,
        cluster: str,
        request_size: int,
        response_size: int,
        duration: float,
    ) -> None:
        self.count(
            head(zone, proto, qtype, do, rcode, plugin, cluster, response_size),
            family,
            request_size,
            response_size,
            duration,
        )

    def families(self) -> dict[str, Any]:
        """The counts, folded into what each family needs (at scrape time)."""
        requests: Counter[tuple[str, str, str, str]] = Counter()
        responses: Counter[tuple[str, str, str]] = Counter()
        do: Counter[str] = Counter()
        by_cluster: Counter[str] = Counter()
        durations: dict[str, Histogram] = {}
        request_sizes: dict[tuple[str, str], Histogram] = {}
        response_sizes: dict[tuple[str, str], Histogram] = {}
        every = [(self.counts, self.sums), *self.workers.values()]
        for (h, family, req_bucket, dur_bucket), n in [item for counts, _ in every for item in list(counts.items())]:
            zone, proto, qtype, is_do, rcode, plugin, cluster, resp_bucket = h
            requests[(zone, proto, family, qtype)] += n
            responses[(zone, rcode, plugin)] += n
            if is_do:
                do[zone] += n
            if cluster:
                by_cluster[cluster] += n
            histogram_in(durations, zone, TIME_BUCKETS).counts[dur_bucket] += n
            histogram_in(request_sizes, (zone, proto), SIZE_BUCKETS).counts[req_bucket] += n
            histogram_in(response_sizes, (zone, proto), SIZE_BUCKETS).counts[resp_bucket] += n
        for h, (req_sum, dur_sum, resp_sum) in [item for _, sums in every for item in list(sums.items())]:
            zone, proto = h[0], h[1]
            histogram_in(durations, zone, TIME_BUCKETS).sum += dur_sum
            histogram_in(request_sizes, (zone, proto), SIZE_BUCKETS).sum += req_sum
            histogram_in(response_sizes, (zone, proto), SIZE_BUCKETS).sum += resp_sum
        return {
            "requests": requests,
            "responses": responses,
            "do": do,
            "by_cluster": by_cluster,
            "durations": durations,
            "request_sizes": request_sizes,
            "response_sizes": response_sizes,
        }


def histogram_in(table: dict, key: Any, bounds: Sequence[float]) -> Histogram:
    """``table[key]``, a Histogram with ``bounds`` made on first use."""
    h = table.get(key)
    if h is None:
        h = table[key] = Histogram(bounds)
    return h


Source = Callable[[], Iterable["Metric"]]


class Metrics:
    """Every metric of one running Corefile, as a prometheus_client collector."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.meters: dict[str, QueryMeter] = {}
        self.enabled: set[tuple[str, str, str]] = set()  # server, zone, plugin name
        self.panic_counts: list[Callable[[], int]] = []  # each listener's count of errors caught while answering
        self.reload_failed = 0
        self.config_hash = ""  # SHA-512 of the Corefile running
        self.clusters: list[Any] = []  # KubernetesCluster, read at scrape time
        self.caches: dict[str, Any] = {}  # server → AnswerCache
        self.sources: list[Source] = []  # plugins' own families (forward, hosts, health…)
        from prometheus_client.core import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def bind(self, server: Any) -> None:
        """Read this configuration's parts (a ServerContext's lists, which later blocks still join)."""
        self.clusters = server.clusters
        self.sources = server.metric_sources
        self.caches = server.answer_caches

    def meter(self, server: str) -> QueryMeter:
        if server not in self.meters:
            self.meters[server] = QueryMeter(server)
        return self.meters[server]

    def add_source(self, source: Source) -> None:
        self.sources.append(source)

    # ------------------------------------------------------------ prometheus_client's collector protocol
    def collect(self) -> Iterator[Metric]:
        yield from self._build_info()
        yield from self._queries()
        yield from self._clusters()
        yield from self._caches()
        for source in self.sources:
            yield from source()

    def _build_info(self) -> Iterator[Metric]:
        from prometheus_client import core as pc

        import twisted

        python = platform.python_version()
        info = pc.GaugeMetricFamily(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion "
            "from which CoreDNS was built.",
            labels=["version", "revision", "goversion"],
        )
        info.add_metric([kubernetai.__version__, "", f"python{python}"], 1)
        yield info
        ours = pc.GaugeMetricFamily(
            "kubernetai_build_info",
            "kubernetai's version and what it runs on.",
            labels=["version", "twisted", "python"],
        )
        ours.add_metric([kubernetai.__version__, twisted.__version__, python], 1)
        yield ours
        panics = pc.CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics.")
        panics.add_metric([], sum(count() for count in self.panic_counts))
        yield panics
        enabled = pc.GaugeMetricFamily(
            "coredns_plugin_enabled",
            "A metric that indicates whether a plugin is enabled on per server and zone basis.",
            labels=["server", "zone", "view", "name"],
        )
        for server, zone, name in sorted(self.enabled):
            enabled.add_metric([server, zone, "", name], 1)
        yield enabled
        failed = pc.CounterMetricFamily("coredns_reload_failed", "Counter of the number of failed reload attempts.")
        failed.add_metric([], self.reload_failed)
        yield failed
        version = pc.GaugeMetricFamily(
            "coredns_reload_version_info",
            "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
            labels=["hash", "value"],
        )
        if self.config_hash:
            version.add_metric(["sha512", self.config_hash], 1)
        yield version
        uptime = pc.GaugeMetricFamily("kubernetai_start_time_seconds", "When kubernetai started (Unix time).")
        uptime.add_metric([], self.started)
        yield uptime

    def _queries(self) -> Iterator[Metric]:
        from prometheus_client import core as pc

        requests = pc.CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        responses = pc.CounterMetricFamily(
            "coredns_dns_responses",
            "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"],
        )
        do = pc.CounterMetricFamily(
            "coredns_dns_do_requests",
            "Counter of DNS requests with DO bit set per zone.",
            labels=["server", "zone", "view"],
        )
        duration = pc.HistogramMetricFamily(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            labels=["server", "zone", "view"],
        )
        request_size = pc.HistogramMetricFamily(
            "coredns_dns_request_size_bytes",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
            labels=["server", "zone", "view", "proto"],
        )
        response_size = pc.HistogramMetricFamily(
            "coredns_dns_response_size_bytes",
            "Size of the returned response in bytes.",
            labels=["server", "zone", "view", "proto"],
        )
        answers = pc.CounterMetricFamily(
            "kubernetai_cluster_answers", "Answers a kubernetai stanza gave (cached ones too).", labels=["cluster"]
        )
        by_cluster: Counter[str] = Counter()
        for server, m in sorted(self.meters.items()):
            f = m.families()
            for (zone, proto, family, qtype), n in sorted(f["requests"].items()):
                requests.add_metric([server, zone, "", proto, family, qtype], n)
            for (zone, rcode, plugin), n in sorted(f["responses"].items()):
                responses.add_metric([server, zone, "", rcode, plugin], n)
            for zone, n in sorted(f["do"].items()):
                do.add_metric([server, zone, ""], n)
            for zone, h in sorted(f["durations"].items()):
                duration.add_metric([server, zone, ""], h.buckets(), h.sum)
            for (zone, proto), h in sorted(f["request_sizes"].items()):
                request_size.add_metric([server, zone, "", proto], h.buckets(), h.sum)
            for (zone, proto), h in sorted(f["response_sizes"].items()):
                response_size.add_metric([server, zone, "", proto], h.buckets(), h.sum)
            by_cluster.update(f["by_cluster"])
        for cluster in self.clusters:
            answers.add_metric([cluster.opts.name()], by_cluster.get(cluster.opts.name(), 0))
        yield from (requests, responses, do, duration, request_size, response_size, answers)

    def _clusters(self) -> Iterator[Metric]:
        from prometheus_client import core as pc

        def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
            return pc.GaugeMetricFamily(f"kubernetai_cluster_{name}", doc, labels=["cluster", *labels])

        def counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
            return pc.CounterMetricFamily(f"kubernetai_cluster_{name}", doc, labels=["cluster", *labels])

        synced = gauge("synced", "1 once every resource of the cluster has been listed.")
        connected = gauge("connected", "1 while every watch of the cluster is established (manifests: always).")
        objects = gauge("objects", "Objects held per kind.", "kind")
        last_sync = gauge("last_sync_timestamp_seconds", "When the cluster's data was last confirmed current.")
        generation = gauge("store_generation", "Changes applied to the cluster's data since start.")
        since_event = gauge("seconds_since_last_event", "Seconds since the last watch event or bookmark.")
        restarts = counter("watch_restarts", "Watches that ended other than at their timeout.", "resource", "reason")
        relists = counter("relists", "Lists of a resource.", "resource", "reason")
        api = counter("api_requests", "Requests to the API server by answer (HTTP code, or error).", "code")
        programming = pc.HistogramMetricFamily(
            "kubernetai_cluster_dns_programming_duration_seconds",
            "coredns_kubernetes_dns_programming_duration_seconds per cluster.",
            labels=["cluster", "service_kind"],
        )
        coredns_programming = pc.HistogramMetricFamily(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.",
            labels=["service_kind"],
        )
        now = self.clock()
        merged: dict[str, Histogram] = {}
        for c in self.clusters:
            name = c.opts.name()
            state = c.metrics_state()
            synced.add_metric([name], 1 if state["synced"] else 0)
            connected.add_metric([name], 1 if state["connected"] else 0)
            for kind, n in sorted(state["objects"].items()):
                objects.add_metric([name, kind], n)
            last_sync.add_metric([name], state["last_sync"] or 0)
            generation.add_metric([name], state["generation"])
            if state["last_event"]:
                since_event.add_metric([name], max(0.0, now - state["last_event"]))
            for (resource, reason), n in sorted(state["restarts"].items()):
                restarts.add_metric([name, resource, reason], n)
            for (resource, reason), n in sorted(state["relists"].items()):
                relists.add_metric([name, resource, reason], n)
            for code, n in sorted(state["api_requests"].items()):
                api.add_metric([name, code], n)
            for kind, h in sorted(state["programming"].items()):
                programming.add_metric([name, kind], h.buckets(), h.sum)
                histogram_in(merged, kind, PROGRAMMING_BUCKETS).add(h)
        for kind, h in sorted(merged.items()):
            coredns_programming.add_metric([kind], h.buckets(), h.sum)
        yield from (synced, connected, objects, last_sync, generation, since_event, restarts, relists, api)
        yield from (programming, coredns_programming)

    def _caches(self) -> Iterator[Metric]:
        from prometheus_client import core as pc

        def family(kind: type, name: str, doc: str) -> Any:
            return kind(f"kubernetai_answer_cache_{name}", doc, labels=["server"])

        hits = family(pc.CounterMetricFamily, "hits", "Queries answered from the answer cache.")
        misses = family(
            pc.CounterMetricFamily, "misses", "Cacheable-looking queries the answer cache could not answer."
        )
        entries = family(pc.GaugeMetricFamily, "entries", "Answers held.")
        evictions = family(
            pc.CounterMetricFamily, "evictions", "Answers dropped to make room (oldest not hit since last passed)."
        )
        for server, cache in sorted(self.caches.items()):
            hits.add_metric([server], cache.hits)
            misses.add_metric([server], cache.misses)
            entries.add_metric([server], len(cache))
            evictions.add_metric([server], cache.evictions)
        yield from (hits, misses, entries, evictions)
