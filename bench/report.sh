#!/usr/bin/env bash
# One command for the figures of issue 15, in one run (the dnsperf pairs interleaved):
#   bench/report.sh [SERVICES] [SECONDS] [PAIRS]
# cached mix (kubernetai and the dict ceiling, over sockets), churn and autopath (in process),
# metrics cost (in process), start-up to the first answer.  Loopback only; bounded in time.
# Not yet: the uncached mix over sockets, 1 and 2 workers, the Go kubernetai's ratio.
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
  echo "cached mix, pair $i: kubernetai ${k% *} q/s (RSS ${k#* } KiB), ceiling $c q/s"
done
.venv/bin/python bench/churn.py "$N" 4
.venv/bin/python bench/metrics_cost.py
.venv/bin/python bench/startup.py 5
