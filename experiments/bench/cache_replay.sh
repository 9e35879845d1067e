#!/usr/bin/env bash
# Whole-command benchmark of `moonlab cache` on the shipped traces.
#
# Reports, from one run of this script on one machine:
#  1. per policy, block accesses replayed per second on one core
#     (`moonlab cache --threads 1 --timing`, capacity 5859 blocks = 3M tokens),
#     and each policy's throughput as a ratio to FIFO measured in the same run;
#  2. the wall time of the full policy × capacity cross product on both traces
#     (all cores), as a ratio to the baseline of merely reading and analysing
#     the same traces (`moonlab trace stats`), measured in the same run.
#
# Usage: experiments/bench/cache_replay.sh [repeats]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-5}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/moonlab"
traces=(traces/data/conversation_trace.jsonl traces/data/synthetic_trace.jsonl)

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
# Times one command; a failing command stops the benchmark (set -e).
elapsed() { local t0; t0=$(now); "$@" >/dev/null; awk -v a="$(now)" -v b="$t0" 'BEGIN{print a-b}'; }

echo "== 1. per-policy replay throughput, one core, capacity 5859 blocks"
tmp=$(mktemp)
for t in "${traces[@]}"; do
  for _ in $(seq "$repeats"); do
    "$bin" cache --trace "$t" --policy all --capacity 5859 --threads 1 --timing --format jsonl >/dev/null 2>>"$tmp"
  done
done
# --timing lines: timing trace=NAME policy=P capacity=C nodes=N accesses=A seconds=S
awk '/^timing /{for(i=2;i<=NF;i++){split($i,kv,"=");v[kv[1]]=kv[2]}
  acc[v["policy"]]+=v["accesses"]; sec[v["policy"]]+=v["seconds"]}
  END {base=acc["fifo"]/sec["fifo"];
    for (p in acc) printf "%-8s %14.0f %10.2f\n", p, acc[p]/sec[p], (acc[p]/sec[p])/base}' "$tmp" > "$tmp.rows"
printf "%-8s %14s %10s\n" policy accesses/s "vs fifo"
sort -k2 -g -r "$tmp.rows"
rm -f "$tmp.rows"
rm -f "$tmp"

echo
echo "== 2. full cross product (9 policies × 1000,5859,20000,inf) on both traces, all cores"
base=$(for _ in $(seq "$repeats"); do elapsed "$bin" trace stats "${traces[@]}"; done | median)
full=$(for _ in $(seq "$repeats"); do
  elapsed "$bin" cache --trace "${traces[0]}" --trace "${traces[1]}" --policy all --capacity 1000,5859,20000,inf
done | median)
printf "baseline (trace stats, both traces): %.3f s\n" "$base"
printf "cross product (72 replays):          %.3f s  (%.2f × baseline)\n" "$full" "$(awk -v a="$full" -v b="$base" 'BEGIN{print a/b}')"
