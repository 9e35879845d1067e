#!/usr/bin/env bash
# End-to-end test of experiments/cluster/slurm/: starts a private one-node
# Slurm cluster on this machine, runs a sharded sweep of the tiny spec as a
# job array (sweep.sbatch) followed by the merge job (merge.sbatch), runs the
# same spec unsharded, and checks that the two combined tables are
# byte-identical. Prints PASS or FAIL (exit 1) on its last line.
#
#   experiments/cluster/slurm-test.sh [MOONLAB-BINARY]
#   experiments/cluster/slurm-test.sh --slurm-only   # the cluster and a trivial array, no moonlab
#
# The binary: the argument, else $MOONLAB, else $CARGO_TARGET_DIR/release/moonlab,
# else $CARGO_TARGET_DIR/debug/moonlab (CARGO_TARGET_DIR defaults to target/).
#
# Needs root. Installs slurm-wlm and munge with apt-get if they are missing.
# Everything else is private to one temporary folder: a munge key and a
# munged on its own socket, a slurm.conf (this host as the only node, with
# its real CPU count and memory from `slurmd -C`; free TCP ports), the
# daemons' state, spool and logs, the results. Nothing in /etc is read or
# changed, and a munged or Slurm already running here is left alone. The
# daemons are stopped and the folder removed on exit, however the script
# ends. Exits 0 with "SKIP: <why>" only when the cluster cannot be brought
# up (not root, no apt-get, the install failed, a daemon did not start);
# SLURM_TEST_STRICT=1 makes a skip a failure.
#
# Environment: SLURM_TEST_SHARDS (3), SLURM_TEST_SPEC
# (experiments/tests/tiny-sweep.yaml), SLURM_TEST_JOB_TIMEOUT (seconds a job
# may take, 120), SLURM_TEST_KEEP=1 (keep the temporary folder).
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
t0=$SECONDS

log() { echo "slurm-test: $*"; }
usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }

slurm_only=0
bin_arg=
for arg in "$@"; do
  case $arg in
    --slurm-only) slurm_only=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "slurm-test: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) bin_arg=$arg ;;
  esac
done

shards=${SLURM_TEST_SHARDS:-3}
spec=${SLURM_TEST_SPEC:-experiments/tests/tiny-sweep.yaml}
job_timeout=${SLURM_TEST_JOB_TIMEOUT:-120}

# State the exit trap needs; set before anything can fail.
tmp=
munged_pid=
ctld_pid=
slurmd_pid=
smoke=''
array=''
merge=''
phase=setup

# Diagnostics for a failure: the queue, the node, the daemons' logs and the
# jobs' outputs.
diagnostics() {
  [ -n "$tmp" ] && [ -d "$tmp" ] || return 0
  echo "---- diagnostics (phase: $phase)"
  if [ -n "$ctld_pid" ] && kill -0 "$ctld_pid" 2>/dev/null; then
    echo "-- squeue"
    squeue -o '%.18i %.9P %.14j %.10T %.10M %R' 2>&1
    echo "-- sinfo -N -l / -R"
    sinfo -N -l 2>&1
    sinfo -R 2>&1
  else
    echo "-- slurmctld is not running"
  fi
  local f
  for f in "$tmp"/log/*; do
    [ -s "$f" ] || continue
    # A daemon's stdout repeats its log file when it has one.
    case $f in *.out) [ -s "${f%.out}.log" ] && continue ;; esac
    echo "-- ${f#"$tmp"/} (last 25 lines)"
    tail -n 25 "$f"
  done
  echo "----"
}

skip() {
  log "SKIP: $*"
  if [ "${SLURM_TEST_STRICT:-0}" = 1 ]; then
    diagnostics
    log "FAIL: SLURM_TEST_STRICT=1 makes a skip a failure"
    exit 1
  fi
  exit 0
}

fail() {
  diagnostics
  log "FAIL: $*"
  exit 1
}

# Stops a daemon this script started: TERM, then KILL after 10 s.
stop() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  # Cancel what is still queued or running, so that no job step outlives
  # the daemons, then stop the daemons: slurmd, slurmctld, munged.
  if [ -n "$ctld_pid" ] && kill -0 "$ctld_pid" 2>/dev/null; then
    local ids i
    ids=$(squeue -h -o %A 2>/dev/null | sort -u)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086 # one id per word
      scancel $ids 2>/dev/null
      for ((i = 0; i < 150; i++)); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop "$slurmd_pid"
  stop "$ctld_pid"
  stop "$munged_pid"
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    if [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then
      log "kept $tmp"
    else
      rm -rf "$tmp"
    fi
  fi
  log "finished in $((SECONDS - t0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---- the binary and the spec (a missing one is a failure, not a skip)
if [ "$slurm_only" = 0 ]; then
  moonlab=${bin_arg:-${MOONLAB:-}}
  if [ -z "$moonlab" ]; then
    target=${CARGO_TARGET_DIR:-$repo/target}
    for profile in release debug; do
      if [ -x "$target/$profile/moonlab" ]; then
        moonlab=$target/$profile/moonlab
        break
      fi
    done
    [ -n "$moonlab" ] ||
      fail "no moonlab binary in $target/{release,debug}: build it (cargo build --release) or pass its path"
  fi
  case $moonlab in
    */*) [ -x "$moonlab" ] || fail "$moonlab is not an executable file"
      moonlab=$(cd "$(dirname "$moonlab")" && pwd)/$(basename "$moonlab") ;;
    *) moonlab=$(command -v "$moonlab") || fail "$moonlab is not on PATH" ;;
  esac
  for sub in run merge; do
    "$moonlab" "$sub" --help >/dev/null 2>&1 ||
      fail "$moonlab has no \`$sub\` subcommand (a build from before the sweep runner?)"
  done
  [ -f "$spec" ] || fail "no spec $spec"
  log "binary $moonlab, spec $spec, $shards shards"
fi

# ---- Slurm and munge: root, installed
[ "$(id -u)" = 0 ] || skip "needs root to run slurmd (running as $(id -un))"
missing=
for cmd in munged munge unmunge slurmctld slurmd sbatch squeue scontrol sinfo scancel; do
  command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 || skip "missing$missing and no apt-get to install slurm-wlm and munge"
  log "installing slurm-wlm and munge (missing:$missing)"
  install_log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >"$install_log" 2>&1; then
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >>"$install_log" 2>&1; then
      tail -n 15 "$install_log"
      rm -f "$install_log"
      skip "apt-get install slurm-wlm munge failed (above)"
    fi
  fi
  rm -f "$install_log"
  for cmd in $missing; do
    command -v "$cmd" >/dev/null 2>&1 || skip "$cmd still missing after installing slurm-wlm and munge"
  done
fi
log "$(slurmd -V), $(munged -V 2>&1 | head -n 1)"

# ---- the private folder (munged wants every folder above its socket
# searchable by all, and its key readable by its owner only)
tmp=$(mktemp -d /tmp/moonlab-slurm-test.XXXXXX) || skip "cannot create a temporary folder"
chmod 755 "$tmp"
mkdir -p "$tmp"/munge "$tmp"/etc "$tmp"/state "$tmp"/spool "$tmp"/log "$tmp"/smoke
chmod 755 "$tmp"/munge

# ---- munged on a private socket with a fresh key
phase=munged
dd if=/dev/urandom of="$tmp"/munge/munge.key bs=1024 count=1 status=none
chmod 600 "$tmp"/munge/munge.key
socket=$tmp/munge/munge.socket
munged -F --key-file="$tmp"/munge/munge.key --socket="$socket" \
  --pid-file="$tmp"/munge/munged.pid --seed-file="$tmp"/munge/munged.seed \
  --log-file="$tmp"/log/munged.log >"$tmp"/log/munged.out 2>&1 &
munged_pid=$!
for ((i = 0; i < 50; i++)); do
  [ -S "$socket" ] && break
  kill -0 "$munged_pid" 2>/dev/null || break
  sleep 0.1
done
munge -n -S "$socket" 2>/dev/null | unmunge -S "$socket" >/dev/null 2>&1 || {
  diagnostics
  skip "munged did not start (its log above)"
}

# ---- slurm.conf: this host, free ports, everything in $tmp
free_port() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=
for ((i = 0; i < 50; i++)); do
  p=$((20000 + RANDOM % 30000))
  if free_port "$p" && free_port $((p + 1)); then
    port=$p
    break
  fi
done
[ -n "$port" ] || skip "no two free TCP ports found"
node=$(hostname -s)
hw=$(slurmd -C 2>/dev/null | head -n 1 | sed 's/^NodeName=[^ ]* *//')
[ -n "$hw" ] || skip "slurmd -C printed nothing"
: >"$tmp"/etc/plugstack.conf
export SLURM_CONF=$tmp/etc/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Written by experiments/cluster/slurm-test.sh: one node, this host.
ClusterName=moonlabtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$tmp/etc/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# Only the private cluster: no inherited SBATCH_*/SQUEUE_*/SINFO_* defaults or
# an enclosing job's SLURM_* variables.
while read -r var; do
  case $var in
    SLURM_CONF | SLURM_TEST_*) ;;
    SLURM_* | SBATCH_* | SQUEUE_* | SINFO_* | SCONTROL_*) unset "$var" ;;
  esac
done < <(compgen -e)

# ---- slurmctld, then slurmd; wait for the node to be idle
phase=slurmctld
slurmctld -D -f "$SLURM_CONF" >"$tmp"/log/slurmctld.out 2>&1 &
ctld_pid=$!
up=0
for ((i = 0; i < 300; i++)); do
  kill -0 "$ctld_pid" 2>/dev/null || break
  if scontrol ping 2>/dev/null | grep -q 'is UP'; then
    up=1
    break
  fi
  sleep 0.1
done
[ "$up" = 1 ] || { diagnostics; skip "slurmctld did not start (its log above)"; }

phase=slurmd
slurmd -D -N "$node" -f "$SLURM_CONF" >"$tmp"/log/slurmd.out 2>&1 &
slurmd_pid=$!
state=
for ((i = 0; i < 600; i++)); do
  kill -0 "$slurmd_pid" 2>/dev/null || { diagnostics; skip "slurmd exited (its log above)"; }
  state=$(sinfo -h -n "$node" -o %t 2>/dev/null)
  case $state in
    idle | mix) break ;;
    inval* | drain* | drng*) diagnostics; skip "the node is $state: $(sinfo -h -R -o %E 2>/dev/null)" ;;
  esac
  sleep 0.1
done
case $state in idle | mix) ;; *) diagnostics; skip "the node did not become idle within 60 s (state: ${state:-none})" ;; esac
log "cluster up: node $node ($hw), ports $port-$((port + 1)), in $((SECONDS - t0)) s"

# ---- helpers for jobs
# submit VAR SBATCH-ARGS...: submits with sbatch --parsable, sets VAR to the
# job id.
submit() {
  local var=$1 out
  shift
  out=$(sbatch --parsable "$@" 2>&1) || fail "sbatch $*: $out"
  printf -v "$var" '%s' "${out%%;*}"
}

# Waits until none of the jobs is pending, running or completing.
wait_jobs() {
  local deadline=$((SECONDS + job_timeout)) ids queued
  ids=$(IFS=,; echo "$*")
  while :; do
    queued=$(squeue -h -j "$ids" -o '%i %T %r' 2>&1) || {
      kill -0 "$ctld_pid" 2>/dev/null || fail "slurmctld died"
      queued="squeue: $queued"
    }
    [ -z "$queued" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "jobs $ids still queued after ${job_timeout} s: $queued"
    sleep 0.5
  done
}

# Checks that job $1 has $2 records (array tasks), all COMPLETED with exit 0.
check_job() {
  local id=$1 want=$2 lines states
  lines=$(scontrol -o show job "$id" 2>&1) || fail "scontrol show job $id: $lines"
  states=$(awk '{ s = "?"; e = "?"
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^JobState=/) s = substr($i, 10)
        if ($i ~ /^ExitCode=/) e = substr($i, 10)
      }
      print s, e }' <<<"$lines" | sort | uniq -c | sed 's/^ *//')
  [ "$states" = "$want COMPLETED 0:0" ] ||
    fail "job $id: expected $want task(s) COMPLETED with exit 0:0, got: $(tr '\n' ';' <<<"$states")"
}

# ---- a trivial array: each task writes its index and the array's size
phase=smoke
cat >"$tmp"/smoke.sh <<EOF
#!/usr/bin/env bash
echo "\$SLURM_ARRAY_TASK_ID \$SLURM_ARRAY_TASK_COUNT \$(date +%s.%N)" >"$tmp/smoke/start-\$SLURM_ARRAY_TASK_ID"
sleep 1
date +%s.%N >"$tmp/smoke/end-\$SLURM_ARRAY_TASK_ID"
EOF
t=$SECONDS
submit smoke --array=0-1 --job-name=smoke --output="$tmp/log/smoke-%A_%a.out" "$tmp"/smoke.sh
wait_jobs "$smoke"
check_job "$smoke" 2
for i in 0 1; do
  read -r index count _ <"$tmp/smoke/start-$i" 2>/dev/null || fail "smoke task $i wrote nothing"
  [ "$index $count" = "$i 2" ] || fail "smoke task $i saw SLURM_ARRAY_TASK_ID/COUNT = $index/$count"
done
overlap=$(awk -v s0="$(cut -d' ' -f3 "$tmp"/smoke/start-0)" -v s1="$(cut -d' ' -f3 "$tmp"/smoke/start-1)" \
  -v e0="$(cat "$tmp"/smoke/end-0)" -v e1="$(cat "$tmp"/smoke/end-1)" \
  'BEGIN { print ((s0 < e1 && s1 < e0) ? "at once" : "one after the other") }')
log "trivial 2-task array: ok ($overlap) in $((SECONDS - t)) s"

if [ "$slurm_only" = 1 ]; then
  log "PASS (--slurm-only: the cluster and a trivial array)"
  exit 0
fi

# ---- the sharded sweep: the array, then the merge job after it
phase=sweep
t=$SECONDS
sharded=$tmp/results-sharded
direct=$tmp/results-direct
export MOONLAB=$moonlab
submit array --array=0-$((shards - 1)) --output="$tmp/log/sweep-%A_%a.out" \
  experiments/cluster/slurm/sweep.sbatch "$spec" "$sharded"
# Held, so that the shards' folder can be checked before the merge; the
# dependency is the README's.
submit merge --hold --dependency=afterok:"$array" --output="$tmp/log/merge-%j.out" \
  experiments/cluster/slurm/merge.sbatch "$spec" "$sharded"
wait_jobs "$array"
check_job "$array" "$shards"
for f in table.csv table.parquet; do
  [ ! -e "$sharded/$f" ] || fail "a shard wrote $f (only the merge should)"
done
scontrol release "$merge" >/dev/null 2>&1 || fail "scontrol release $merge failed"
phase=merge
wait_jobs "$merge"
check_job "$merge" 1
log "sharded sweep ($shards array tasks) and merge job: ok in $((SECONDS - t)) s"

# ---- the same spec unsharded, and the comparison
phase=unsharded
t=$SECONDS
timeout "$job_timeout" "$moonlab" run "$spec" --results "$direct" --quiet \
  >"$tmp"/log/unsharded.out 2>&1 || fail "unsharded moonlab run failed (exit $?)"
log "unsharded run: ok in $((SECONDS - t)) s"

phase=compare
points() { find "$1" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort; }
[ "$(points "$sharded")" = "$(points "$direct")" ] ||
  fail "the point folders differ: $(diff <(points "$sharded") <(points "$direct") | tr '\n' ' ')"
n_points=$(points "$direct" | wc -l)
[ "$n_points" -gt 0 ] || fail "the unsharded run wrote no point folders"
for f in table.csv table.parquet; do
  [ -s "$direct/$f" ] || fail "the unsharded run wrote no $f"
  [ -s "$sharded/$f" ] || fail "the merge wrote no $f"
  if ! cmp "$sharded/$f" "$direct/$f"; then
    [ "$f" = table.csv ] && diff "$sharded/$f" "$direct/$f" | head -n 20
    fail "$f differs between the merged ($sharded) and the unsharded ($direct) run"
  fi
done
log "PASS: $n_points points in $shards shards on Slurm, merged: table.csv and table.parquet identical to the unsharded run"
