#!/usr/bin/env bash
# Throughput and latency of kubernetai on loopback, measured with dnsperf.
# Usage: bench/run.sh [SERVICES] [SECONDS]   (needs: make's .venv, dnsperf)
# PROMETHEUS=1 adds `prometheus 127.0.0.1:0` to the block (metrics cost, issue 13).
# CEILING=1 runs bench/ceiling.py instead: prepared answers from a dict, the per-core ceiling (issue 15).
# The server is pinned to CPU 0 and dnsperf to CPU 1; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
SECONDS_=${2:-10}
PORT=${PORT:-15353}
make -s .venv/.installed >/dev/null
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
.venv/bin/python bench/gen_cluster.py "$WORK" "$N"
cat > "$WORK/Corefile" <<COREFILE
.:$PORT {
    bind 127.0.0.1
    ${PROMETHEUS:+prometheus 127.0.0.1:0}
    kubernetai cluster.local {
        manifests cluster.yaml
    }
}
COREFILE
if [ -n "${CEILING:-}" ]; then
  (exec taskset -c 0 .venv/bin/python bench/ceiling.py "$WORK" "$PORT" > "$WORK/server.log" 2>&1) &
else
  (cd "$WORK" && exec taskset -c 0 "$OLDPWD/.venv/bin/twistd" --pidfile= -n kubernetai --config Corefile > server.log 2>&1) &
fi
SERVER=$!
for _ in $(seq 100); do dig @127.0.0.1 -p "$PORT" svc0.ns0.svc.cluster.local +short +time=1 +tries=1 2>/dev/null | grep -q . && break; kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }; sleep 0.2; done
echo "kubernetai $(.venv/bin/python -c 'import kubernetai; print(kubernetai.__version__)'), $N services, $(wc -l < "$WORK/queries.txt") distinct queries${PROMETHEUS:+, with prometheus}${CEILING:+, CEILING (dict of prepared answers)}"
# One pass over the query file first (WARM=0 to skip): the figures are the steady state, caches filled.
if [ "${WARM:-1}" != 0 ]; then
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -n 1 -c 4 -q 200 > /dev/null 2>&1 || true
fi
taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$SECONDS_" -c 4 -q 200 2>&1 \
  | grep -E "Queries sent|Queries completed|Queries lost|Response codes|Queries per second|Average Latency|Latency StdDev"
echo "server RSS: $(ps -o rss= -p "$SERVER") KiB"
