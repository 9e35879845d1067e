#!/usr/bin/env bash
# Regenerates the simulator studies behind reports/fig5-scheduling.md and
# reports/simulator-studies.md: every spec of this folder (`moonlab run`),
# then their tables in Markdown (tables.py reads each spec's table.csv).
#
# Usage: experiments/studies/run_studies.sh [results-dir]   (default results/studies)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-results/studies}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/moonlab"
"$bin" run experiments/studies --results "$out" --quiet >/dev/null
python3 experiments/studies/tables.py "$out"
