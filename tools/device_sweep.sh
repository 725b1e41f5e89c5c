#!/bin/bash
# On the lent GPU machine, from the repository root: bash tools/device_sweep.sh DIR SECONDS
# DIR is what `python tools/device_sweep.py prepare ... --into DIR` filled (carried there); every sweep config in it
# runs as its own process, side by side, for at most SECONDS; then each run's records (no weights) go to $OUT/runs.
set -u
dir=$1
limit=$2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$dir"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for config in "$dir"/sweep_*.yaml; do
  name=$(basename "$config" .yaml)
  timeout "$limit" python3 -m pipeline sweep "$config" > "$OUT/$name.log" 2>&1 &
done
wait
mkdir -p "$OUT/runs"
cd "$dir/out/runs" || exit 0
for record in */*/run.json */*/split.json */*/training.json */*/sweep.log */*/eval/summary.json */*/eval/metrics.csv; do
  [ -f "$record" ] && cp --parents "$record" "$OUT/runs/"
done
tail -n 3 "$OUT"/*.log
