#!/usr/bin/env bash
# Throughput and latency of kubernetai on loopback, measured with dnsperf.
# Usage: bench/run.sh [SERVICES] [SECONDS]   (needs: make's .venv, dnsperf)
# PROMETHEUS=1 adds `prometheus 127.0.0.1:0` to the block (metrics cost, issue 13).
# CEILING=1 runs bench/ceiling.py instead: prepared answers from a dict, the per-core ceiling (issue 15);
# CEILING=sendto the same ceiling writing with socket.sendto, as kubernetai's UDP hits do.
# AUTOPATH=on|off: a client pod at 127.0.0.1 in ns0, `pods verified`, the queries about ns0, and
# (on) `autopath @kubernetai` in the block: the same block with and without autopath (issue 15).
# TREE=DIR serves from another checkout of kubernetai (PYTHONPATH=DIR: an older commit, for before/after).
# WORKERS=N runs `twistd kubernetai --workers N` (issue 15); CPUS=0,1 changes the server's pinning.
# The server is pinned to CPU 0 (CPUS) and dnsperf to CPU 1 (DNSPERF_CPUS); every run is bounded in time.
# Reported: queries/s, latency, RSS of every server process, and server CPU µs per query (all processes).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
SECONDS_=${2:-10}
PORT=${PORT:-15353}
make -s .venv/.installed >/dev/null
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
.venv/bin/python bench/gen_cluster.py "$WORK" "$N" ${AUTOPATH:+--client-pod}
if [ -n "${AUTOPATH:-}" ]; then mv "$WORK/queries-ns0.txt" "$WORK/queries.txt"; fi
cat > "$WORK/Corefile" <<COREFILE
.:$PORT {
    bind 127.0.0.1
    ${PROMETHEUS:+prometheus 127.0.0.1:0}
    $([ "${AUTOPATH:-}" = on ] && echo "autopath @kubernetai")
    ready 127.0.0.1:$((PORT + 1))
    kubernetai cluster.local {
        manifests cluster.yaml
        $([ -n "${AUTOPATH:-}" ] && echo "pods verified")
    }
}
COREFILE
if [ -n "${CEILING:-}" ]; then
  (exec taskset -c 0 .venv/bin/python bench/ceiling.py "$WORK" "$PORT" $([ "$CEILING" = sendto ] && echo --sendto) > "$WORK/server.log" 2>&1) &
else
  (cd "$WORK" && exec env ${TREE:+PYTHONPATH="$TREE"} taskset -c "${CPUS:-0}" "$OLDPWD/.venv/bin/twistd" --pidfile= -n kubernetai --config Corefile \
     --workers "${WORKERS:-1}" > server.log 2>&1) &
fi
SERVER=$!
for _ in $(seq 100); do dig @127.0.0.1 -p "$PORT" svc0.ns0.svc.cluster.local +short +time=1 +tries=1 2>/dev/null | grep -q . && break; kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }; sleep 0.2; done
if [ -z "${CEILING:-}" ]; then  # /ready: every stanza synced, and with --workers every worker too
  for _ in $(seq 300); do curl -sf "127.0.0.1:$((PORT + 1))/ready" > /dev/null && break; sleep 0.1; done
fi
echo "kubernetai $(cd "$WORK" && env ${TREE:+PYTHONPATH="$TREE"} "$OLDPWD/.venv/bin/python" -c 'import kubernetai; print(kubernetai.__version__, kubernetai.__file__)'), $N services, $(wc -l < "$WORK/queries.txt") distinct queries${PROMETHEUS:+, with prometheus}${CEILING:+, CEILING (dict of prepared answers)}${AUTOPATH:+, autopath $AUTOPATH}"
# One pass over the query file first (WARM=0 to skip): the figures are the steady state, caches filled.
if [ "${WARM:-1}" != 0 ]; then
  # Each process has its own cache and the kernel picks the process by source port: with workers,
  # several passes (new source ports each) warm every cache.
  for _ in $(seq $(( ${WORKERS:-1} > 1 ? 4 * WORKERS : 1 ))); do
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -n 1 -c 4 -q 200 -t 1 > /dev/null 2>&1 || true
  done
fi
# Every server process: the primary and its workers.
procs() { echo "$SERVER" $(pgrep -P "$SERVER" || true); }
cpu_ticks() { local t=0; for p in $(procs); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
BEFORE=$(cpu_ticks)
taskset -c "${DNSPERF_CPUS:-1}" dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$SECONDS_" -c 4 -q 200 ${DNSPERF_TIMEOUT:+-t "$DNSPERF_TIMEOUT"} > "$WORK/dnsperf.out" 2>&1
AFTER=$(cpu_ticks)
grep -E "Queries sent|Queries completed|Queries lost|Response codes|Queries per second|Average Latency|Latency StdDev" "$WORK/dnsperf.out"
DONE=$(awk '/Queries completed/ {print $3}' "$WORK/dnsperf.out")
echo "server CPU per query: $(awk -v t=$((AFTER - BEFORE)) -v hz="$(getconf CLK_TCK)" -v n="$DONE" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') us"
echo "server CPU ticks by process: $(for p in $(procs); do awk '{printf "%s ", $14 + $15}' /proc/$p/stat; done)"
echo "server RSS: $(for p in $(procs); do ps -o rss= -p "$p"; done | paste -sd' ') KiB"
