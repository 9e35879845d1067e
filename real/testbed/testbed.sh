#!/usr/bin/env bash
# A multi-host replay testbed on one machine: every node of a replay
# cluster in its own network namespace, joined through a bridge, each
# node's link shaped with tc to its NIC's rate times the configuration's
# real.bytes_scale (so a scaled transfer takes the model's time).
#
#   real/testbed/testbed.sh --config FILE [--set K=V]... --dir DIR [options] [-- CMD ARGS...]
#
# Without CMD it brings the testbed up, prints how to use it and waits for
# Ctrl-C; with CMD it runs CMD once the testbed is up (in this, the root,
# namespace: the testbed's addresses are reachable from here) and tears
# everything down when CMD ends, returning CMD's exit status. DIR receives
# what `moonlab real replay --cluster DIR` reads (master.addr, secret,
# workers), the processes' logs and pids, and `links` (each node's address,
# namespace and shaping).
#
# Options:
#   --delay MS     one-way delay added on every node's link, each way
#   --loss PCT     packet loss on every node's link, each way
#                  (with the kernel's netem qdisc where it has one; otherwise
#                  `moonlab real delayline` forwards the link's frames between
#                  it and the bridge, offloads off with ethtool)
#   --rate-scale X multiply every node's shaped rate by X (default 1)
#   --no-shape     no tc shaping at all
#
# Layout: namespaces mlt-sw (the bridge), mlt-m (master, 10.77.0.1),
# mlt-p<k> (prefill k: store node and worker, 10.77.0.<10+k>), mlt-d<k>
# (decode k, 10.77.0.<60+k>); the root namespace joins the bridge as
# 10.77.0.254 (unshaped: the Conductor's control traffic). Only loopback
# and these addresses are ever used. Each node's link is shaped in both
# directions: its egress on its own side, its ingress on the bridge's side.
#
# The binary: $MOONLAB, else $CARGO_TARGET_DIR/release/moonlab (target/ by
# default). Needs root (ip netns, tc). Exits 2 with "SKIP: <why>" when
# namespaces cannot be made here. Everything it made is removed on exit,
# however the script ends (a testbed left by a killed run is removed by
# the next one, or by `testbed.sh --down`).
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
MOONLAB=${MOONLAB:-${CARGO_TARGET_DIR:-$repo/target}/release/moonlab}
PREFIX=mlt
NET=10.77.0

config= dir= delay= loss= rate_scale=1 shape=1 down_only=0
sets=()
cmd=()
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --delay) delay=$2; shift 2 ;;
        --loss) loss=$2; shift 2 ;;
        --rate-scale) rate_scale=$2; shift 2 ;;
        --no-shape) shape=0; shift ;;
        --down) down_only=1; shift ;;
        --) shift; cmd=("$@"); break ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "testbed.sh: unknown argument \`$1\` (see --help)" >&2; exit 64 ;;
    esac
done

namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-" || true
}

pids=()
teardown() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 1 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    # Processes left in the namespaces by an earlier run, then the
    # namespaces (their veths go with them) and the root's end.
    for ns in $(namespaces); do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "${PREFIX}-root" 2>/dev/null
    return 0
}

if [ "$down_only" = 1 ]; then teardown; exit 0; fi
[ -n "$config" ] || { echo "testbed.sh: --config FILE is required" >&2; exit 64; }
[ -n "$dir" ] || { echo "testbed.sh: --dir DIR is required" >&2; exit 64; }
[ -x "$MOONLAB" ] || { echo "testbed.sh: no moonlab binary at $MOONLAB (cargo build --release, or set MOONLAB)" >&2; exit 1; }

skip() { echo "SKIP: $*"; exit 2; }
[ "$(id -u)" = 0 ] || skip "the testbed needs root (network namespaces, tc)"
command -v ip >/dev/null || skip "no \`ip\` (iproute2) here"
command -v tc >/dev/null || skip "no \`tc\` (iproute2) here"
# One testbed at a time on a machine (its names and addresses are fixed):
# wait for another to finish.
exec 9>"${TMPDIR:-/tmp}/moonlab-testbed.lock"
flock 9 || { echo "testbed.sh: cannot lock ${TMPDIR:-/tmp}/moonlab-testbed.lock" >&2; exit 1; }

ip netns add "${PREFIX}-probe$$" 2>/dev/null || skip "network namespaces cannot be made here"
ip netns del "${PREFIX}-probe$$"

teardown   # a testbed left by a killed run
trap 'teardown' EXIT
trap 'exit 130' INT TERM

mkdir -p "$dir" || exit 1
dir=$(cd "$dir" && pwd)
rm -f "$dir/master.addr" "$dir/workers" "$dir/links"
plan=$("$MOONLAB" real plan --config "$config" "${sets[@]}" --master-yaml "$dir/master.yaml") || exit 1
eval "$plan"

netem_ok() {
    ip netns add "${PREFIX}-netem" 2>/dev/null || return 1
    ip -n "${PREFIX}-netem" link add v0 type veth peer name v1 2>/dev/null
    tc -n "${PREFIX}-netem" qdisc add dev v0 root netem delay 1ms 2>/dev/null
    local ok=$?
    ip netns del "${PREFIX}-netem"
    return $ok
}
use_netem=0 use_line=0
if [ -n "$delay$loss" ]; then
    if netem_ok; then
        use_netem=1
    elif command -v ethtool >/dev/null; then
        echo "testbed.sh: no netem qdisc in this kernel ($(uname -r)): delay and loss by moonlab real delayline" >&2
        use_line=1
    else
        echo "testbed.sh: --delay/--loss need the kernel's netem qdisc, which this kernel ($(uname -r)) does not have, or ethtool for the delay line (apt install ethtool)" >&2
        exit 1
    fi
fi

sw=${PREFIX}-sw
ip netns add "$sw"
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up

# shape NS DEV BITS: the egress of DEV in NS at BITS per second (with
# the delay and loss asked for).
shape() {
    local ns=$1 dev=$2 bits=$3
    [ "$shape" = 1 ] || return 0
    local rate
    rate=$(awk -v b="$bits" -v s="$rate_scale" 'BEGIN { printf "%d", b * s }')
    [ "$rate" -gt 0 ] || return 0
    if [ "$use_netem" = 1 ]; then
        local args=(rate "${rate}bit")
        [ -n "$delay" ] && args+=(delay "${delay}ms")
        [ -n "$loss" ] && args+=(loss "${loss}%")
        tc -n "$ns" qdisc add dev "$dev" root netem "${args[@]}" limit 100000
    else
        # A token bucket: bursts of a few milliseconds' worth at most.
        local burst=$(( rate / 8 / 250 ))
        [ "$burst" -lt 16384 ] && burst=16384
        tc -n "$ns" qdisc add dev "$dev" root tbf rate "${rate}bit" burst "$burst" latency 200ms
    fi
}

# host NAME ADDR BITS: a namespace joined to the bridge, its link shaped.
host() {
    local name=$1 addr=$2 bits=$3
    local ns=${PREFIX}-$name
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "${PREFIX}-$name-h" type veth peer name "${PREFIX}-$name-s"
    ip link set "${PREFIX}-$name-h" netns "$ns"
    ip link set "${PREFIX}-$name-s" netns "$sw"
    ip -n "$ns" link set "${PREFIX}-$name-h" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    if [ "$use_line" = 1 ] && [ "$bits" -gt 0 ]; then
        # The link's frames go through a delay line to a second veth on
        # the bridge; offloads off, so every frame is one packet.
        ip link add "${PREFIX}-$name-x" type veth peer name "${PREFIX}-$name-y"
        ip link set "${PREFIX}-$name-x" netns "$sw"
        ip link set "${PREFIX}-$name-y" netns "$sw"
        ip -n "$sw" link set "${PREFIX}-$name-y" master br0
        for d in "${PREFIX}-$name-s" "${PREFIX}-$name-x" "${PREFIX}-$name-y"; do
            ip -n "$sw" link set "$d" up
            ip netns exec "$sw" ethtool -K "$d" tso off gso off gro off tx off rx off >/dev/null 2>&1
        done
        ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off tx off rx off >/dev/null 2>&1
        lines+=("${PREFIX}-$name-s ${PREFIX}-$name-x $((${#lines[@]} + 1))")
    else
        ip -n "$sw" link set "${PREFIX}-$name-s" master br0
        ip -n "$sw" link set "${PREFIX}-$name-s" up
    fi
    local eff=0
    if [ "$bits" -gt 0 ] && [ "$shape" = 1 ]; then
        shape "$ns" eth0 "$bits"
        shape "$sw" "${PREFIX}-$name-s" "$bits"
        eff=$(awk -v b="$bits" -v s="$rate_scale" 'BEGIN { printf "%d", b * s }')
    fi
    echo "$name $addr $ns $eff" >> "$dir/links"
}

lines=()
# The root namespace's door onto the bridge (unshaped).
ip link add "${PREFIX}-root" type veth peer name "${PREFIX}-root-s"
ip link set "${PREFIX}-root-s" netns "$sw"
ip -n "$sw" link set "${PREFIX}-root-s" master br0
ip -n "$sw" link set "${PREFIX}-root-s" up
ip addr add "$NET.254/24" dev "${PREFIX}-root"
ip link set "${PREFIX}-root" up

host m "$NET.1" 0
for k in $(seq 0 $((prefill_instances - 1))); do host "p$k" "$NET.$((10 + k))" "$prefill_bits_per_s"; done
for k in $(seq 0 $((decode_instances - 1))); do host "d$k" "$NET.$((60 + k))" "$decode_bits_per_s"; done

for l in "${lines[@]}"; do
    set -- $l
    ip netns exec "$sw" "$MOONLAB" real delayline "$1" "$2" --delay-ms "${delay:-0}" \
        --loss "${loss:-0}" --seed "$3" 2> "$dir/delayline-$1.log" &
    pids+=("$!")
done

secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask 077
printf '%s' "$secret" > "$dir/secret"
umask 022

# run NS NAME ARGS...: a moonlab process in NS, logged and remembered.
run() {
    local ns=$1 name=$2; shift 2
    ip netns exec "${PREFIX}-$ns" "$MOONLAB" "$@" 2> "$dir/$name.log" &
    local pid=$!
    pids+=("$pid")
    echo "$pid" > "$dir/$name.pid"
}

wait_file() {
    local f=$1 name=$2
    for _ in $(seq 1 400); do
        [ -s "$f" ] && return 0
        kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || { echo "testbed.sh: $name exited; see $dir/$name.log" >&2; tail -5 "$dir/$name.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "testbed.sh: $name did not start in 20 s; see $dir/$name.log" >&2
    exit 1
}

run m master master --listen "$NET.1:7000" --secret-file "$dir/secret" \
    --config "$dir/master.yaml" --addr-file "$dir/master.addr.tmp"
wait_file "$dir/master.addr.tmp" master
master=$(cat "$dir/master.addr.tmp")
rm -f "$dir/master.addr.tmp"

node() {
    local role=$1 k=$2 ns=$3 addr=$4 size=$5
    local name=$role-$k
    run "$ns" "$name-store" store --name "$name" --size "$size" --listen "$addr:0" \
        --master "$master" --secret-file "$dir/secret"
    run "$ns" "$name" real worker --role "$role" --index "$k" --config "$config" "${sets[@]}" \
        --master "$master" --secret-file "$dir/secret" --rpc-listen "$addr:7100" \
        --addr-file "$dir/$name.addr"
}
for k in $(seq 0 $((prefill_instances - 1))); do node prefill "$k" "p$k" "$NET.$((10 + k))" "$prefill_segment_bytes"; done
for k in $(seq 0 $((decode_instances - 1))); do node decode "$k" "d$k" "$NET.$((60 + k))" "$decode_segment_bytes"; done

workers=
for k in $(seq 0 $((prefill_instances - 1))); do
    wait_file "$dir/prefill-$k.addr" "prefill-$k"
    workers+="prefill $k $(cat "$dir/prefill-$k.addr")"$'\n'
done
for k in $(seq 0 $((decode_instances - 1))); do
    wait_file "$dir/decode-$k.addr" "decode-$k"
    workers+="decode $k $(cat "$dir/decode-$k.addr")"$'\n'
done
printf '%s' "$workers" > "$dir/workers.tmp" && mv "$dir/workers.tmp" "$dir/workers"
printf '%s' "$master" > "$dir/master.addr"

echo "testbed up: master $master, $prefill_instances prefill and $decode_instances decode nodes (links: $dir/links)" >&2
if [ ${#cmd[@]} -gt 0 ]; then
    "${cmd[@]}"
    exit $?
fi
echo "run: $MOONLAB real replay --cluster $dir --config $config ...   (Ctrl-C here tears the testbed down)" >&2
while :; do sleep 3600; done
