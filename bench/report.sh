#!/usr/bin/env bash
# One command for the figures of issue 15, in one run (the dnsperf pairs interleaved):
#   bench/report.sh [SERVICES] [SECONDS] [PAIRS]
# cached mix (kubernetai and the dict ceiling, with Port.write and with sendto, over sockets), an autopath
# block against the same block without autopath (over sockets), 1 and 2 workers (over sockets, both
# cores shared with dnsperf), churn and uncached (in process), metrics cost (in process), start-up
# to the first answer.  Loopback only; bounded in time.
# BASE=DIR (a checkout of an older commit, e.g. `git worktree add /tmp/base REV`) also runs the
# uncached bench from it, interleaved; start-up is timed beside Twisted's own floor, uncached answers
# beside the server's own share of them (uncached.py --floor).
# Then the Go kubernetai against us on the same API server (bench/go_ratio.py; skipped when
# ../shared/seed/build.sh has not built it), memory from the API and from manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
SECS=${2:-8}
PAIRS=${3:-3}
make -s .venv/.installed >/dev/null
echo "== $(date -u +%FT%TZ) $(nproc) cores, $N services"
for i in $(seq "$PAIRS"); do
  k=$(bash bench/run.sh "$N" "$SECS" 2>&1 | awk '/Queries per second/ {print $4} /server RSS/ {print $3}' | paste -sd' ')
  c=$(CEILING=1 bash bench/run.sh "$N" "$SECS" 2>&1 | awk '/Queries per second/ {print $4}')
  s=$(CEILING=sendto bash bench/run.sh "$N" "$SECS" 2>&1 | awk '/Queries per second/ {print $4}')
  echo "cached mix, pair $i: kubernetai ${k% *} q/s (RSS ${k#* } KiB), ceiling $c q/s, ceiling with sendto $s q/s"
  if [ -n "${BASE:-}" ]; then
    b=$(TREE="$BASE" bash bench/run.sh "$N" "$SECS" 2>&1 | awk '/Queries per second/ {print $4}')
    echo "cached mix, pair $i: before (BASE) $b q/s"
  fi
done
for i in $(seq "$PAIRS"); do  # the same block with and without autopath, a client pod at 127.0.0.1 asking about ns0
  for a in on off ${BASE:+before-on before-off}; do
    tree=""; [ "${a#before-}" != "$a" ] && tree=$BASE
    r=$(TREE=$tree AUTOPATH=${a#before-} bash bench/run.sh "$N" "$SECS" 2>&1 \
      | awk '/Queries per second/ {q=$4} /CPU per query/ {c=$5} END {print q, c}')
    echo "autopath $a, pair $i: ${r% *} q/s, ${r#* } us CPU/query"
  done
done
for i in $(seq "$PAIRS"); do
  for w in 1 2; do
    r=$(DNSPERF_TIMEOUT=0.5 WORKERS=$w CPUS=0,1 DNSPERF_CPUS=0,1 bash bench/run.sh "$N" "$SECS" 2>&1 \
      | awk '/Queries per second/ {q=$4} /CPU per query/ {c=$5} /server RSS/ {$1=$2=""; r=$0} END {print q, c, r}')
    echo "workers $w, pair $i: $(echo "$r" | awk '{printf "%s q/s, %s us CPU/query, RSS KiB per process:", $1, $2; for (i = 3; i <= NF; i++) printf " %s", $i}')"
  done
done
.venv/bin/python bench/go_ratio.py "$N" "$SECS" "$PAIRS"
.venv/bin/python bench/api_memory.py "$N"
.venv/bin/python bench/api_memory.py "$N" --manifests
if [ -n "${BASE:-}" ]; then  # BASE=a checkout of an older commit: uncached before and after, interleaved
  .venv/bin/python bench/uncached.py "$N" 3 --against "$BASE"
else
  .venv/bin/python bench/uncached.py "$N" 4
fi
.venv/bin/python bench/uncached.py "$N" 3 --floor  # the server's own share: what no resolver change can remove
.venv/bin/python bench/churn.py "$N" 4 5
.venv/bin/python bench/metrics_cost.py
.venv/bin/python bench/startup.py 5 --floor
