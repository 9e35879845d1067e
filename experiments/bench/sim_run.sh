#!/usr/bin/env bash
# Whole-run benchmark of the cluster simulator on the Figure-5 setup
# (16 nodes, KVCache-centric scheduling):
#  1. the bundled conversation trace (12,031 requests, ~1 hour);
#  2. a 10x-rate synthesized trace of the same hour (`moonlab trace synth`).
# Reports wall time on one core (taskset, where available), events processed
# per second (stale flow wake-ups and samples are not counted; decode runs of
# iterations count once), peak memory, and the wall time as a ratio to
# reading and analysing the same trace (`moonlab trace stats`), measured in
# the same run. Also the events a step-by-step decode run processes
# (`--set decode.fast_forward=false`), for scale.
#
# Usage: experiments/bench/sim_run.sh [repeats]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-3}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/moonlab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
conv=traces/data/conversation_trace.jsonl
"$bin" trace synth --like "$conv" --rate-scale 10 --seed 1 -o "$work/conv10x.jsonl" 2>/dev/null

one_core=""
if command -v taskset >/dev/null 2>&1; then one_core="taskset -c 0"; fi

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
# Times one command; a failing command stops the benchmark with its error
# (a timing of a failure is not a timing).
elapsed() {
  local t0; t0=$(now)
  if ! $one_core "$@" >/dev/null 2>"$work/stderr"; then cat "$work/stderr" >&2; exit 1; fi
  awk -v a="$(now)" -v b="$t0" 'BEGIN{print a-b}'
}

for trace in "$conv" "$work/conv10x.jsonl"; do
  name=$(basename "$trace")
  base=$(for _ in $(seq "$repeats"); do elapsed "$bin" trace stats "$trace"; done | median)
  # A run folder holds one run: each repeat writes a fresh one.
  run=$(for _ in $(seq "$repeats"); do
    rm -rf "$work/run"
    elapsed "$bin" sim --trace "$trace" --config experiments/configs/fig5-scheduling.yaml --out "$work/run" --quiet
  done | median)
  events=$(awk -F': ' '/"events"/ {gsub(/,/,"",$2); print $2}' "$work/run/summary.json")
  requests=$(awk -F': ' '/"requests"/ {gsub(/,/,"",$2); print $2}' "$work/run/summary.json")
  rm -rf "$work/step"
  "$bin" sim --trace "$trace" --config experiments/configs/fig5-scheduling.yaml --out "$work/step" \
    --set decode.fast_forward=false --quiet >/dev/null
  step_events=$(awk -F': ' '/"events"/ {gsub(/,/,"",$2); print $2}' "$work/step/summary.json")
  rm -rf "$work/step"
  rss="n/a"
  if [ -x /usr/bin/time ]; then
    rm -rf "$work/run"
    rss=$( { /usr/bin/time -f %M "$bin" sim --trace "$trace" --config experiments/configs/fig5-scheduling.yaml \
      --out "$work/run" --quiet >/dev/null; } 2>&1 | tail -1)
    rss="$((rss / 1024)) MiB"
  fi
  printf "%-24s %7d requests  %9d events (%d step by step)  sim %6.3f s  %12.0f events/s  peak RSS %s  (%.1f x trace stats, %.3f s)\n" \
    "$name" "$requests" "$events" "$step_events" "$run" "$(awk -v e="$events" -v t="$run" 'BEGIN{print e/t}')" "$rss" \
    "$(awk -v a="$run" -v b="$base" 'BEGIN{print a/b}')" "$base"
done
