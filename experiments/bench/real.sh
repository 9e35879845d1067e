#!/usr/bin/env bash
# The real backend against what users reach for today, each ratio taken
# within one run of this script on the same machine:
#
#   1. transfer engine (moonlab bench te) against iperf3 on loopback,
#      requests of 16 KiB to 64 MiB at 1 to 64 in flight;
#   2. store put/get (moonlab bench store, through the client library with
#      checksums, against a `moonlab cluster`) against redis-server with
#      redis-benchmark, same value sizes and client counts;
#   3. the SSD tier's direct I/O (moonlab bench ssd) against fio, same block
#      size, queue depth and file system (median of three turns each).
#
# Usage: experiments/bench/real.sh [SECONDS_PER_POINT] [OUT.md] [SSD_DIR]
# Needs iperf3, redis-server (redis-tools) and fio (apt install iperf3
# redis-server fio). Writes the tables to OUT.md (default
# reports/real-bench.md) atomically. Measures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-3}"
out="${2:-reports/real-bench.md}"
ssd_dir="${3:-/var/tmp/moonlab-ssd-bench}"
for tool in iperf3 redis-server redis-benchmark fio python3; do
  command -v "$tool" >/dev/null || { echo "real.sh: $tool is missing (apt install iperf3 redis-server fio)" >&2; exit 1; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/moonlab-target}"
cargo build --release --locked --bin moonlab >&2
bin="$CARGO_TARGET_DIR/release/moonlab"
work="$(mktemp -d)"
cleanup() {
  [ -n "${cluster_pid:-}" ] && kill -TERM "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
  [ -n "${redis_port:-}" ] && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1
  rm -rf "$work" "$ssd_dir"
}
trap cleanup EXIT
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gbps() { python3 -c "print(f'{$1:.2f}')"; }
micros() { python3 -c "print(f'{$1:.0f}')"; }
ratio() { python3 -c "print(f'{$1/$2*100:.0f} %')"; }

{
echo "# The real backend against iperf3, redis and fio"
echo
echo "Made by \`experiments/bench/real.sh $secs\` on $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)."
echo "Each point runs $secs s; GB/s are 10^9 bytes per second; ratios are ours over the baseline in the same run."
echo

# ---- 1. transfer engine against iperf3 ---------------------------------
echo "## Transfer engine (TCP, loopback) against iperf3"
echo
best_iperf=0
row="| iperf3 |"
for p in 1 4; do
  port="$(free_port)"
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  sleep 0.5
  bps="$(iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -P "$p" -J | json "d['end']['sum_received']['bits_per_second']")"
  wait
  g="$(python3 -c "print($bps/8e9)")"
  row="$row -P $p: $(gbps "$g") GB/s |"
  best_iperf="$(python3 -c "print(max($best_iperf, $g))")"
done
echo "$row"
echo
echo "The baseline is iperf3's best ($(gbps "$best_iperf") GB/s): this machine's loopback limit as iperf3 sees it."
echo "Rows: request size; columns: requests in flight (threads × batch 1); cells: moonlab GB/s (ratio to iperf3's best)."
echo
echo "| write | 1 | 4 | 16 | 64 |"
echo "|---|---|---|---|---|"
for bs in 16KiB 64KiB 256KiB 1MiB 4MiB 16MiB 64MiB; do
  row="| $bs |"
  for c in 1 4 16 64; do
    g="$("$bin" bench te --operation write --block-size "$bs" --batch-size 1 --threads "$c" --duration "$secs" --json | json "d['gb_per_s']")"
    row="$row $(gbps "$g") ($(ratio "$g" "$best_iperf")) |"
  done
  echo "$row"
done
echo
echo "| read | 1 | 4 | 16 | 64 |"
echo "|---|---|---|---|---|"
for bs in 16KiB 64KiB 256KiB 1MiB 4MiB 16MiB 64MiB; do
  row="| $bs |"
  for c in 1 4 16 64; do
    g="$("$bin" bench te --operation read --block-size "$bs" --batch-size 1 --threads "$c" --duration "$secs" --json | json "d['gb_per_s']")"
    row="$row $(gbps "$g") ($(ratio "$g" "$best_iperf")) |"
  done
  echo "$row"
done
echo

# ---- 2. store against redis ---------------------------------------------
echo "## Store put/get against redis-server"
echo
echo "moonlab: \`moonlab bench store\` through the client library (PutStart, then the write with the node's note alongside, then PutEnd; GetReplicaList, then the read, checksum verified) against a \`moonlab cluster\` of one master and two store nodes, one replica. Each client is a thread with its own event loop; clients connect and open the segments before the clock starts, as redis-benchmark connects first. **Same host**: the client maps the store nodes' segments (the default on their host); **TCP**: \`--no-same-host\`, bytes over the transfer engine's loopback TCP as from another host."
echo "redis: \`redis-benchmark -t set,get -d SIZE -c CLIENTS\` against \`redis-server --save '' --appendonly no\` on loopback TCP."
echo
echo "| value | clients | put, same host | put, TCP | redis SET | same host / redis | TCP / redis | get, same host | get, TCP | redis GET | same host / redis | TCP / redis |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
"$bin" cluster --dir "$work/cluster" --store-size 1GiB >/dev/null 2>&1 &
cluster_pid=$!
for _ in $(seq 100); do [ -f "$work/cluster/master.addr" ] && "$bin" kv --cluster "$work/cluster" stat 2>/dev/null | grep -q "on 2 segments" && break; sleep 0.2; done
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --proto-max-bulk-len 1gb --client-query-buffer-limit 1gb >/dev/null
sleep 0.5
store() { "$bin" bench store --cluster "$work/cluster" --duration "$secs" --json "$@" | json "d['gb_per_s']"; }
for size in 1MiB 4MiB 16MiB; do
  bytes="$(python3 -c "print({'1MiB':1<<20,'4MiB':4<<20,'16MiB':16<<20}['$size'])")"
  for c in 1 4; do
    put="$(store --op put --value-size "$size" --clients "$c")"
    put_tcp="$(store --op put --value-size "$size" --clients "$c" --no-same-host)"
    get="$(store --op get --value-size "$size" --clients "$c" --keys 16)"
    get_tcp="$(store --op get --value-size "$size" --clients "$c" --keys 16 --no-same-host)"
    n="$(python3 -c "print(max(50, int(${secs} * 3e9 / $bytes)))")"
    csv="$(redis-benchmark -p "$redis_port" -t set,get -d "$bytes" -c "$c" -n "$n" --csv 2>/dev/null)"
    rset="$(echo "$csv" | python3 -c "import csv,sys; r={row[0]:row[1] for row in csv.reader(sys.stdin)}; print(float(r['SET'])*$bytes/1e9)")"
    rget="$(echo "$csv" | python3 -c "import csv,sys; r={row[0]:row[1] for row in csv.reader(sys.stdin)}; print(float(r['GET'])*$bytes/1e9)")"
    echo "| $size | $c | $(gbps "$put") | $(gbps "$put_tcp") | $(gbps "$rset") | $(ratio "$put" "$rset") | $(ratio "$put_tcp" "$rset") | $(gbps "$get") | $(gbps "$get_tcp") | $(gbps "$rget") | $(ratio "$get" "$rget") | $(ratio "$get_tcp" "$rget") |"
  done
done
echo
rtt="$("$bin" bench store --cluster "$work/cluster" --duration "$secs" --json --op exist | json "d['seconds']/d['operations']*1e6")"
n="$(python3 -c "print(int(${secs} * 20000))")"
ping_rps="$(redis-benchmark -p "$redis_port" -t ping -c 1 -n "$n" --csv 2>/dev/null | python3 -c "import csv,sys; r={row[0]:row[1] for row in csv.reader(sys.stdin)}; print(r['PING_MBULK'])")"
ping="$(python3 -c "print(1e6/float($ping_rps))")"
echo "One round trip, one client: moonlab's master $(micros "$rtt") µs (\`--op exist\` on a missing key), redis $(micros "$ping") µs (PING). A put takes two master round trips (PutStart, PutEnd) besides its copy, a get one; a redis SET or GET takes one, with the value in it."
kill -TERM "$cluster_pid"; wait "$cluster_pid" 2>/dev/null || true; cluster_pid=
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; redis_port=
echo

# ---- 3. SSD tier against fio --------------------------------------------
echo "## SSD tier (O_DIRECT, io_uring) against fio"
echo
echo "Same file system ($(df -T "$(dirname "$ssd_dir")" | awk 'NR==2 {print $2}') under $(dirname "$ssd_dir")), a 1 GiB file each, sequential, fio \`--direct=1 --ioengine=io_uring\`."
echo "A disk's throughput drifts between runs more than the two differ, so each point runs three times, moonlab and fio taking turns, and the table gives each one's median."
echo
echo "| rw | block | depth | moonlab | fio | ratio |"
echo "|---|---|---|---|---|---|"
mkdir -p "$ssd_dir"
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
for rw in read write; do
  for bs in 64KiB 1MiB; do
    fbs="$(python3 -c "print({'64KiB':'64k','1MiB':'1m'}['$bs'])")"
    for d in 1 8 32; do
      ours_runs=(); fio_runs=()
      for _ in 1 2 3; do
        ours_runs+=("$("$bin" bench ssd --file "$ssd_dir/ours" --size 1GiB --block-size "$bs" --iodepth "$d" --rw "$rw" --duration "$secs" --json | json "d['gb_per_s']")")
        fio_runs+=("$(fio --name=b --filename="$ssd_dir/fio" --size=1g --bs="$fbs" --direct=1 --ioengine=io_uring --iodepth="$d" --rw="$rw" --runtime="$secs" --time_based --output-format=json | json "d['jobs'][0]['$rw']['bw_bytes']/1e9")")
      done
      ours="$(median "${ours_runs[@]}")"
      fio_bw="$(median "${fio_runs[@]}")"
      echo "| $rw | $bs | $d | $(gbps "$ours") | $(gbps "$fio_bw") | $(ratio "$ours" "$fio_bw") |"
    done
  done
done
} > "$work/report.md"
mkdir -p "$(dirname "$out")"
cp "$work/report.md" "$out.tmp.$$" && mv "$out.tmp.$$" "$out"
cat "$out"
