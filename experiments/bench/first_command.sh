#!/usr/bin/env bash
# The README's first command from nothing, as a newcomer meets it: an empty
# cargo home (every crate downloaded from crates.io) and an empty target
# folder. Reports the wall seconds of each stage — download, cold release
# build, the command itself — and where the build went (the ten slowest
# crates, from `cargo build --timings`).
#
# Usage: experiments/bench/first_command.sh [--keep-downloads]
#   --keep-downloads reuses ~/.cargo's downloaded crates (build time only).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(TMPDIR=/var/tmp mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ "${1:-}" != "--keep-downloads" ]]; then
  # The toolchain stays where rustup put it; only the crates start empty.
  export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  export CARGO_HOME="$work/cargo-home"
  mkdir -p "$CARGO_HOME"
fi
export CARGO_TARGET_DIR="$work/target"
export CARGO_INCREMENTAL=0
now() { date +%s.%N; }
t0=$(now)
cargo fetch --locked --quiet
t1=$(now)
cargo build --release --locked --quiet --timings
t2=$(now)
conv=traces/data/conversation_trace.jsonl
cargo run --release --locked --quiet -- trace stats "$conv" >/dev/null
cargo run --release --locked --quiet -- cache --trace "$conv" --policy all --capacity 1000,5859,20000,inf >/dev/null
t3=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
  printf "download %.0f s, cold release build %.0f s, the command %.1f s: %.1f min in all\n", b-a, c-b, d-c, (d-a)/60 }'
python3 - "$CARGO_TARGET_DIR"/cargo-timings/cargo-timing.html <<'PY'
import json, re, sys
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);\n", open(sys.argv[1]).read(), re.S).group(1))
units.sort(key=lambda u: -u["duration"])
print(f"{len(units)} units, {sum(u['duration'] for u in units):.0f} s of compile time on all cores; the slowest:")
for u in units[:10]:
    print(f"  {u['duration']:6.1f} s  {u['name']} {u['version']} {u.get('target', '').strip()}")
PY
