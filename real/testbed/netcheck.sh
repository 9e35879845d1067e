#!/usr/bin/env bash
# The simulator's network model against transfers on the testbed, at two
# rates (each node's NIC × real.bytes_scale, and a quarter of it) by three
# one-way delays on every link (none, 0.5 ms and 5 ms; netem where the
# kernel has it, the delay line otherwise): one flow, two flows sharing a
# receiver, two sharing a sender, and incast. Prints one Markdown table (experiments and reports take it from
# here: reports/real-netcheck.md).
#
#   real/testbed/netcheck.sh [CONFIG]      (default real/testbed/replay.yaml)
#
# Needs root; prints "SKIP: <why>" and exits 2 where namespaces cannot be
# made. The binary: $MOONLAB, else $CARGO_TARGET_DIR/release/moonlab.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-$repo/real/testbed/replay.yaml}
MOONLAB=${MOONLAB:-${CARGO_TARGET_DIR:-$repo/target}/release/moonlab}
export MOONLAB
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
first=1
shapes=("1|" "1|0.5" "1|5" "0.25|" "0.25|0.5" "0.25|5")
for shape in "${shapes[@]}"; do
    scale=${shape%%|*} delay=${shape#*|}
    label="$(awk -v s="$scale" 'BEGIN { printf "rate × %s", s }')"
    args=(--rate-scale "$scale")
    if [ -n "$delay" ]; then
        args+=(--delay "$delay")
        label="$label, delay $delay ms"
    fi
    out=$("$repo/real/testbed/testbed.sh" --config "$config" --dir "$dir/tb" "${args[@]}" -- \
        "$MOONLAB" real netcheck --cluster "$dir/tb" --label "$label" 2>"$dir/err")
    rc=$?
    if [ $rc = 2 ]; then cat "$dir/err" "$dir/tb"/*.log 2>/dev/null | grep SKIP; echo "$out"; exit 2; fi
    if [ $rc != 0 ]; then
        echo "| $label | not measured: $(grep -v '^testbed up' "$dir/err" | head -1) | | | | |"
        continue
    fi
    if [ $first = 1 ]; then echo "$out"; first=0; else echo "$out" | tail -n +3; fi
done
