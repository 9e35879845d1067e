#!/usr/bin/env bash
# Executes every notebook in notebooks/ headless against a small sweep, the
# way CI does (.ci/run calls it after the tests):
#
#   1. a Python virtual environment with notebooks/requirements.txt, cached
#      outside the clone under $MOONLAB_VENV_CACHE (default /var/tmp), keyed
#      by the Python version and a hash of requirements.txt, so a repeat run
#      installs nothing;
#   2. `moonlab run experiments/tests/tiny-sweep.yaml --results <tmp>/tiny-sweep`
#      with the moonlab binary given as the first argument or $MOONLAB
#      (default: $CARGO_TARGET_DIR/release/moonlab if it exists, else
#      $CARGO_TARGET_DIR/debug/moonlab, CARGO_TARGET_DIR defaulting to
#      target/; neither existing, `cargo build --release` makes one — a
#      binary found is taken as it is, so build it after changing the code);
#   3. `jupyter nbconvert --to notebook --execute` on every notebook, with
#      MOONLAB_RESULTS pointing at the sweep, into a temporary folder; any
#      error (an exception, a failed assertion, a cell over the timeout)
#      fails the run.
#
# Usage: bash notebooks/run.sh [MOONLAB_BINARY]
# Environment: MOONLAB (binary), PYTHON (default python3),
#   MOONLAB_VENV_CACHE (default /var/tmp), NOTEBOOK_CELL_TIMEOUT_S (default
#   300), MOONLAB_FIGURES (if set, the notebooks save their figures there as
#   PNG), MOONLAB_KEEP (if set, the temporary folder, with the executed
#   notebooks, is kept and named).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

py=${PYTHON:-python3}
req=notebooks/requirements.txt
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# requirements.txt pins versions that need Python 3.11 or later (numpy 2.4,
# IPython 9); their wheels exist for 3.11 to 3.13 on Linux x86_64.
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "notebooks/run.sh: $py is Python $pyver; the notebooks need 3.11 or later (set PYTHON)" >&2
  exit 2
fi
if command -v sha256sum >/dev/null 2>&1; then
  key=$(sha256sum <"$req" | cut -c1-16)
else
  key=$(shasum -a 256 <"$req" | cut -c1-16)
fi
venv=${MOONLAB_VENV_CACHE:-/var/tmp}/moonlab-notebooks-py$pyver-$key

say() { printf '== notebooks: %s\n' "$*"; }

# A Debian or Ubuntu Python without its venv package (python3-venv: the
# ensurepip module) cannot create environments; install it, as root or
# through sudo.
install_venv_package() {
  say "python cannot create a venv: installing python3-venv"
  local sudo=
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "python$pyver-venv" ||
    $sudo apt-get install -y -qq python3-venv
}

# The environment is built in place (a venv cannot be moved) and marked
# complete last; an unmarked one (a broken earlier attempt) or one that no
# longer imports (its Python gone) is built again.
# A lock keeps two runs from building the same one at once.
make_venv() {
  if [ -f "$venv/.complete" ] &&
    "$venv/bin/python" -c 'import polars, matplotlib, nbconvert, ipykernel' 2>/dev/null; then
    say "venv $venv (cached)"
    return
  fi
  say "venv $venv (creating)"
  rm -rf "$venv"
  if ! "$py" -m venv "$venv"; then
    rm -rf "$venv"
    install_venv_package
    "$py" -m venv "$venv"
  fi
  # Wheels only: nothing is compiled on the CI machine.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: -r "$req"
  touch "$venv/.complete"
}

mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
fi
make_venv
if command -v flock >/dev/null 2>&1; then
  flock -u 9
fi

# The moonlab binary.
target=${CARGO_TARGET_DIR:-$root/target}
moonlab=${1:-${MOONLAB:-}}
if [ -z "$moonlab" ]; then
  if [ -x "$target/release/moonlab" ]; then
    moonlab=$target/release/moonlab
  elif [ -x "$target/debug/moonlab" ]; then
    moonlab=$target/debug/moonlab
  else
    say "no moonlab binary: cargo build --release"
    cargo build --release --locked --bin moonlab
    moonlab=$target/release/moonlab
  fi
fi
if [ ! -x "$moonlab" ]; then
  echo "notebooks/run.sh: $moonlab: not an executable moonlab binary" >&2
  exit 2
fi
moonlab=$(cd "$(dirname "$moonlab")" && pwd)/$(basename "$moonlab")
say "moonlab $moonlab"

tmp=$(mktemp -d)
if [ -z "${MOONLAB_KEEP:-}" ]; then
  trap 'rm -rf "$tmp"' EXIT
else
  say "keeping $tmp"
fi

say "moonlab run experiments/tests/tiny-sweep.yaml"
"$moonlab" run experiments/tests/tiny-sweep.yaml --results "$tmp/tiny-sweep" --quiet
# `moonlab table`'s summary across seeds, which sweep_overview.ipynb checks
# its own polars group_by against.
"$moonlab" table "$tmp/tiny-sweep" --format csv \
  --metrics ttft_mean_s,ttft_p90_s,ttft_p99_s,tbt_p90_s,hit_rate,effective_request_capacity,goodput_rps \
  --out "$tmp/moonlab-table.csv"

export MOONLAB_RESULTS=$tmp/tiny-sweep
export MOONLAB_TABLE_CSV=$tmp/moonlab-table.csv
export MPLBACKEND=Agg
# Nothing from the user's Jupyter or IPython set-up, and no bytecode written
# into the clone (the notebooks import notebooks/moonlab_results.py).
export JUPYTER_CONFIG_DIR=$tmp/jupyter/config JUPYTER_DATA_DIR=$tmp/jupyter/data
export JUPYTER_RUNTIME_DIR=$tmp/jupyter/runtime IPYTHONDIR=$tmp/ipython
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$tmp/executed"
status=0
for nb in notebooks/*.ipynb; do
  name=$(basename "$nb")
  start=$(date +%s)
  if "$venv/bin/jupyter" nbconvert --to notebook --execute \
    --ExecutePreprocessor.timeout="${NOTEBOOK_CELL_TIMEOUT_S:-300}" \
    --ExecutePreprocessor.kernel_name=python3 \
    --output-dir "$tmp/executed" --output "$name" "$nb" \
    >"$tmp/executed/$name.log" 2>&1; then
    say "$name ok ($(($(date +%s) - start)) s)"
  else
    say "$name FAILED ($(($(date +%s) - start)) s)"
    # The failing cell and its traceback, without the terminal colours.
    sed 's/\x1b\[[0-9;]*m//g' "$tmp/executed/$name.log" >&2
    status=1
  fi
done
exit $status
