#!/usr/bin/env bash
# Regenerates the simulator studies behind reports/fig5-scheduling.md and
# reports/simulator-studies.md: every run below, then their tables in
# Markdown (tables.py reads each run folder's summary.json).
#
# Usage: experiments/studies/run_studies.sh [runs-dir]   (default runs/studies)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-runs/studies}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/moonlab"
conv=traces/data/conversation_trace.jsonl
syn=traces/data/synthetic_trace.jsonl
mkdir -p "$out"
sim() { local name=$1; shift; rm -rf "$out/$name"; "$bin" sim --quiet --table-format csv --out "$out/$name" "$@" >/dev/null; }

for s in random round-robin least-loaded local-cache-aware kvcache-centric; do
  sim "fig5-$s" --trace $conv --config experiments/configs/fig5-scheduling.yaml --set scheduler=$s
done
sim fig5-colocated-16 --trace $conv --config experiments/configs/fig5-scheduling.yaml \
  --set deployment=colocated --set prefill.instances=16 --set decode.instances=16
sim lvg-local --trace $conv --config experiments/configs/local-vs-global.yaml --set scheduler=local-cache-aware
sim lvg-global --trace $conv --config experiments/configs/local-vs-global.yaml --set scheduler=kvcache-centric
for p in 5 6 7 8 9 10 11; do
  sim "pd-${p}P$((16 - p))D" --trace $syn --config experiments/configs/pd-ratio.yaml \
    --set prefill.instances=$p --set decode.instances=$((16 - p))
done
for g in 25 50 100 200 400 800; do
  sim "bw-$g" --trace $syn --config experiments/configs/bandwidth.yaml \
    --set prefill.nic_gbit_per_s=$g --set decode.nic_gbit_per_s=$g
done
python3 experiments/studies/tables.py "$out"
