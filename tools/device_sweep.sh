#!/bin/bash
# On the lent GPU machine, from the repository root: bash tools/device_sweep.sh DIR SECONDS [JOBS]
# DIR is what `python tools/device_sweep.py prepare ... --into DIR` filled (carried there). Its sweep configs run
# JOBS at a time (default 8), in name order (seed 0's first), until SECONDS have passed; then each run's records
# (DIR/records names them; no weights) go to $OUT/runs. A run cut off by the deadline comes back unevaluated and
# is not merged.
set -u
dir=$1
limit=$2
jobs=${3:-8}
deadline=$(( $(date +%s) + limit ))
export deadline OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$dir"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# shellcheck disable=SC2016  # the inner script expands its own variables
find "$dir" -maxdepth 1 -name 'sweep_*.yaml' | sort | xargs -P "$jobs" -I{} bash -c '
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 60 ] || exit 0
  timeout "$left" python3 -m pipeline sweep "$1" > "$OUT/$(basename "$1" .yaml).log" 2>&1' _ {}
mkdir -p "$OUT/runs"
mapfile -t records < "$dir/records"
cd "$dir/out/runs" || exit 0
for name in "${records[@]}"; do
  for record in */*/"$name"; do
    [ -f "$record" ] && cp --parents "$record" "$OUT/runs/"
  done
done
tail -n 2 "$OUT"/*.log
