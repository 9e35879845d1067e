#!/usr/bin/env bash
# Whole-run benchmark of the sweep runner and the capacity search.
#  1. Runner overhead: `moonlab run` of specs/sweep.yaml (20 points) on one
#     thread, the whole process timed, against the time its points' own runs
#     took (simulating, rendering and writing each run folder; the runner
#     prints it), measured in the same run: the overhead is starting up,
#     reading the trace, checking configurations, scheduling points and the
#     table. Also shown: the points' simulation alone (summary.json wall_s).
#  2. Parallel speedup: the same sweep on 2 threads against 1 thread.
#  3. Search: `moonlab search specs/search.yaml` against the whole 16 x 16
#     grid (`--exhaustive`): the same answer, and the share of the grid's
#     runs the search needed.
# Each timing is the median of the repeats; the machine should be idle.
#
# Usage: experiments/bench/sweep.sh [repeats]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-3}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/moonlab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
run_sweep() { # threads -> seconds (the runner's report in $work/err)
  rm -rf "$work/sweep"
  local t0 t1
  t0=$(now)
  "$bin" run experiments/bench/specs/sweep.yaml --results "$work/sweep" --threads "$1" >/dev/null 2>"$work/err"
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
inside() { sed -n 's/.*own runs took \([0-9.]*\) s.*/\1/p' "$work/err"; }
sum_wall() { python3 -c "
import json,glob,sys
print(sum(json.load(open(f))['wall_s'] for f in glob.glob(sys.argv[1]+'/*/summary.json')))" "$work/sweep"; }

one=(); two=(); own=(); sim=()
for _ in $(seq "$repeats"); do
  one+=("$(run_sweep 1)"); own+=("$(inside)"); sim+=("$(sum_wall)")
  two+=("$(run_sweep 2)")
done
t1=$(printf '%s\n' "${one[@]}" | median)
t2=$(printf '%s\n' "${two[@]}" | median)
inner=$(printf '%s\n' "${own[@]}" | median)
simulated=$(printf '%s\n' "${sim[@]}" | median)
points=$(ls -d "$work"/sweep/*/ | wc -l)
echo "runner: $points points; 1 thread $(printf %.2f "$t1") s for the whole process, the points' runs $(printf %.2f "$inner") s (their simulation $(printf %.2f "$simulated") s): the runner adds $(echo "100 * ($t1 - $inner) / $inner" | bc -l | xargs printf %.1f) %"
echo "parallel: 2 threads $(printf %.2f "$t2") s: speedup $(echo "$t1 / $t2" | bc -l | xargs printf %.2f)x on $(nproc) cores"

t0=$(now)
"$bin" search experiments/bench/specs/search.yaml --results "$work/search" --quiet > "$work/pruned.txt"
ts=$(echo "$(now) - $t0" | bc -l)
t0=$(now)
"$bin" search experiments/bench/specs/search.yaml --results "$work/search-full" --exhaustive --quiet > "$work/full.txt"
tf=$(echo "$(now) - $t0" | bc -l)
grep '(base)' "$work/pruned.txt" | sed 's/^/search:     /'
grep '(base)' "$work/full.txt" | sed 's/^/whole grid: /'
probes=$(python3 -c "import json;print(len(json.load(open('$work/search/search.json'))['probes']))")
grid=$(python3 -c "import json;print(json.load(open('$work/search/search.json'))['grid_size'])")
same=$(python3 -c "import json;a=json.load(open('$work/search/search.json'))['answers'];b=json.load(open('$work/search-full/search-exhaustive.json'))['answers'];print('same answer' if a==b else 'DIFFERENT ANSWERS')")
echo "search: $probes of $grid points ($(echo "100 * $probes / $grid" | bc -l | xargs printf %.1f) %), $(printf %.1f "$ts") s against $(printf %.1f "$tf") s for the grid; $same"
