"""Small-scale replication: HICRA vs GRPO vs entropy regularization, same prompts, same seed.

  python benchmarks/replicate_small.py                         # one GPU, time-boxed (preset h200)
  python benchmarks/replicate_small.py --preset cpu-smoke      # 2 steps each on CPU (a test runs it)
  python benchmarks/replicate_small.py --plot runs/replicate_small --figures docs/replication
  python benchmarks/replicate_small.py --write_data            # regenerate the frozen prompts

The three trainers (configs/replicate_small.py, one per algorithm) live in one
process and take their steps in turn, so they always have the same number of
steps; a new round starts only when it and the final evaluation still fit in
`--budget_s` (measured from the start, model load and compilation included).
Every trainer starts from the same weights, sees the same prompts in the same
order (same seed) and is evaluated on the same held-out split at the start and
at the end.

Writes into `--out`: <algorithm>/metrics.jsonl and samples.jsonl (the
trainer's own logs), eval.jsonl (start and end evaluations) and summary.json
(timings, steps, device, versions). Each file is written as soon as its figures
exist, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
ALGORITHMS = ("hicra", "grpo", "entropy_reg")

# Scale of each preset; everything else comes from configs/replicate_small.py.
PRESETS = {
    # metrics.jsonl holds every scalar; no TensorBoard files on the device.
    "h200": dict(budget_s=330.0, max_steps=1000, overrides={"log.tensorboard": False}),
    "cpu-smoke": dict(
        budget_s=1e9, max_steps=2,
        overrides={"rollout.prompts_per_step": 2, "rollout.group_size": 4,
                   "rollout.max_new_tokens": (16,), "loss.micro_batch_size": 8,
                   "data.eval_size": 2, "eval.samples": 2, "model.compute_dtype": "float32",
                   "log.tensorboard": False}),
}


def _load_config_module():
  spec = importlib.util.spec_from_file_location(
      "replicate_small_config", os.path.join(REPO, "configs", "replicate_small.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_configs(preset: str, out: str, model: str, algorithms):
  """One validated train config per algorithm (same everything else)."""
  from hicra_jax.commands import train as train_cmd  # pylint: disable=import-outside-toplevel
  configs = {}
  for algorithm in algorithms:
    c = _load_config_module().get_config()
    c.algorithm = algorithm
    c.workdir = os.path.join(out, algorithm)
    c.model.path = model
    c.num_steps = PRESETS[preset]["max_steps"]
    c.update_from_flattened_dict(PRESETS[preset].get("overrides", {}))
    configs[algorithm] = train_cmd.validate(c)
  return configs


def _append_jsonl(path: str, record) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")


def _write_json(path: str, record) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def run(args) -> dict:
  """Trains the algorithms in turn until the budget; returns the summary."""
  t_start = time.perf_counter()
  # pylint: disable=import-outside-toplevel
  import jax
  from flax import nnx
  from hicra_jax.train.build import build_components
  from hicra_jax.train.loop import Trainer
  # pylint: enable=import-outside-toplevel
  os.makedirs(args.out, exist_ok=True)
  configs = make_configs(args.preset, args.out, args.model, args.algorithms)
  first = configs[args.algorithms[0]]
  components = build_components(first)  # model, prompts, reward, SG trie: shared
  graphdef, state = nnx.split(components.model)
  trainers = {}
  for algorithm, config in configs.items():
    # Each trainer owns its buffers (updates donate them); all start from the same weights.
    model = nnx.merge(graphdef, jax.tree_util.tree_map(lambda x: x.copy(), state))
    trainers[algorithm] = Trainer(config, dataclasses.replace(components, model=model))
  summary = {
      "preset": args.preset, "algorithms": list(args.algorithms), "budget_s": args.budget_s,
      "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
      "jax": jax.__version__, "python": platform.python_version(),
      "prompts_per_step": int(first.rollout.prompts_per_step),
      "group_size": int(first.rollout.group_size),
      "max_new_tokens": int(first.rollout.max_new_tokens[0]),
      "eval_problems": len(components.eval_examples), "eval_samples": int(first.eval.samples),
      "time_setup_s": round(time.perf_counter() - t_start, 1), "steps": 0, "rounds": [],
  }
  summary_path = os.path.join(args.out, "summary.json")
  eval_path = os.path.join(args.out, "eval.jsonl")
  if os.path.exists(eval_path):
    os.remove(eval_path)
  _write_json(summary_path, summary)
  print(f"setup {summary['time_setup_s']}s on {summary['device']} (jax {jax.__version__})",
        flush=True)

  def evaluate(name: str, trainer) -> float:
    t0 = time.perf_counter()
    ev = trainer.evaluate()
    record = {"algorithm": name, "step": int(trainer.state.step), **ev,
              "time_s": round(time.perf_counter() - t0, 1)}
    _append_jsonl(eval_path, record)
    print(f"eval {name} step {record['step']}: accuracy {ev.get('eval_accuracy', 0):.3f} "
          f"({record['time_s']}s)", flush=True)
    return time.perf_counter() - t0

  # Same weights and key at step 0: one base evaluation stands for all three.
  # Until a step has run, the final evaluations are budgeted at this one's time
  # (compilation included); then at the last rollouts' time, scaled by rows.
  final_eval_s = evaluate("base", trainers[args.algorithms[0]]) * len(trainers)
  eval_per_step_rows = (summary["eval_problems"] * summary["eval_samples"]
                        / (summary["prompts_per_step"] * summary["group_size"]))
  last_round_s = None
  while summary["steps"] < PRESETS[args.preset]["max_steps"]:
    elapsed = time.perf_counter() - t_start
    if last_round_s is not None and elapsed + last_round_s + final_eval_s > args.budget_s:
      break
    t0 = time.perf_counter()
    times = {}
    rollout_s = 0.0
    for name, trainer in trainers.items():
      m = trainer.advance()
      times[name] = round(m.get("time_step_s", 0.0), 2)
      rollout_s += m.get("time_rollout_s", 0.0)
    last_round_s = time.perf_counter() - t0
    final_eval_s = 1.2 * rollout_s * max(eval_per_step_rows, 1.0)
    summary["steps"] += 1
    summary["rounds"].append(times)
    _write_json(summary_path, summary)
    label = "compile + step" if summary["steps"] == 1 else "step"
    print(f"round {summary['steps']}: {label} " +
          " ".join(f"{k} {v:.1f}s" for k, v in times.items()) +
          f" (elapsed {time.perf_counter() - t_start:.0f}s)", flush=True)
  for name, trainer in trainers.items():
    evaluate(name, trainer)
    trainer.close()
  summary["time_total_s"] = round(time.perf_counter() - t_start, 1)
  _write_json(summary_path, summary)
  print(f"done: {summary['steps']} steps per algorithm in {summary['time_total_s']}s", flush=True)
  return summary


# The task: the quickstart's (base accuracy 15-60%, see docs/replication/README.md).
TASK = "chain_sum"
TASK_KWARGS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def write_data(path: str, seed: int = 0) -> None:
  """Freezes every distinct reasoning-gym problem of TASK as JSONL, in generation order.

  Distinct questions only, so the held-out split (the first data.eval_size
  rows) shares no problem with the training rows.
  """
  import reasoning_gym  # pylint: disable=import-outside-toplevel
  generated = reasoning_gym.create_dataset(TASK, size=5000, seed=seed, **TASK_KWARGS)
  unique = {row["question"]: row for row in generated}
  rows = list(unique.values())
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")
  print(f"wrote {len(rows)} rows to {os.path.normpath(path)}")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--preset", choices=sorted(PRESETS), default="h200")
  ap.add_argument("--out", default="runs/replicate_small")
  ap.add_argument("--model", default="smollm2", help='"smollm2" or a path to the GGUF file')
  ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
  ap.add_argument("--budget_s", type=float, default=None,
                  help="wall-clock budget from the start (default: the preset's)")
  ap.add_argument("--plot", metavar="RUN_DIR", help="draw the figures of a finished run")
  ap.add_argument("--figures", default="docs/replication", help="where --plot writes")
  ap.add_argument("--write_data", action="store_true", help="regenerate the frozen prompts")
  args = ap.parse_args(argv)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  if args.write_data:
    write_data(os.path.join(REPO, "docs", "replication", "chain_sum.jsonl"))
    return
  if args.plot:
    from replicate_plots import plot_run  # pylint: disable=import-outside-toplevel
    for path in plot_run(args.plot, args.figures):
      print("wrote", path)
    return
  args.algorithms = tuple(a for a in args.algorithms.split(",") if a)
  unknown = sorted(set(args.algorithms) - set(ALGORITHMS))
  if unknown or not args.algorithms:
    ap.error(f"--algorithms {unknown or args.algorithms}: expected a comma list of {ALGORITHMS}")
  if args.budget_s is None:
    args.budget_s = PRESETS[args.preset]["budget_s"]
  run(args)


if __name__ == "__main__":
  main()
