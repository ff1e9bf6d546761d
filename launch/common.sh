# Shared by launch/tpu_vm.sh and launch/gpu_node.sh (sourced; they set PROG first).
# launch/slurm.sbatch keeps its own copy: sbatch runs a spooled copy of the script,
# away from this file.

die() {
  echo "$PROG: error: $*" >&2
  echo "run '$PROG --help' for usage" >&2
  exit 2
}

# Prints its arguments as one shell command line: words made only of safe
# characters as they are, the others single-quoted (shlex.split reads it back).
quote() {
  local word out=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}
