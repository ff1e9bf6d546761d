"""README.md's examples run: its Python blocks, and its eval / generate / convert commands.

The commands are run where a test of the same path already is, taking the
command from the README (tests/readme_helpers.py lists which test runs which);
the Python blocks, the six-benchmark eval of a model path and the checks that
every such README command has its test are here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hicra_jax import cli
import readme_helpers as readme

# Run after the blocks, in the same namespace: what they computed is what the comments say.
PYTHON_CHECKS = """
import numpy as np
N, T = 4, 32  # the README: 4 samples of max_new_tokens=32
assert isinstance(tokenizer.decode(completion, skip_special_tokens=True), str) and completion
assert logits.shape == (1, tokens.shape[1], config.vocab_size), logits.shape
assert rollout.tokens.shape == (N, T) and rollout.completion_mask.shape == (N, T)
assert mask.shape == (N, T) and mask.dtype == bool and not (mask & ~completion_mask).any()
assert set(np.asarray(rewards).tolist()) <= {0.0, 1.0}
assert adv.shape == (N,) and adv_NxT.shape == (N, T)
assert logprobs.shape == (N, T)
# The policy's log-probs of its own samples before any update are the sampler's.
np.testing.assert_allclose(np.asarray(logprobs)[completion_mask],
                           rollout.logprobs[completion_mask], atol=1e-3)
assert np.isfinite(float(loss)) and abs(float(metrics["ratio_mean"]) - 1) < 1e-3
print("README examples OK:", rollout.texts(tokenizer))
"""


def readme_python_program() -> str:
  """The README's ```python blocks, in order (the second continues the first), verbatim.

  No step needs shortening: ~30 s on 2 cores, nearly all of it loading and compiling the
  model (32 new tokens instead of 8 save ~2 s).
  """
  blocks = readme.python_blocks()
  assert len(blocks) == 2, f"README.md has {len(blocks)} python blocks; this test knows 2"
  return "\n".join(blocks)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
  script = tmp_path / "readme_examples.py"
  script.write_text(readme_python_program() + PYTHON_CHECKS, encoding="utf-8")
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "README examples OK:" in proc.stdout


@pytest.mark.slow
def test_readme_eval_of_a_model_path_on_the_six_benchmarks(smollm2_path):
  """The README's six-benchmark eval, with the SmolLM2 GGUF as the model, 1 problem x 1 sample."""
  argv = readme.runnable(readme.readme_command(readme.EVAL_MODEL_PATH), console=False,
                         replace={"/path/to/model": smollm2_path},
                         limit=1, k=1, max_new_tokens=4)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  # output_dir is the default "eval_results", in the test's working directory.
  with open("eval_results/summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  names = ["aime24", "aime25", "math500", "amc23", "minerva", "olympiadbench"]
  assert list(summary["benchmarks"]) == names
  for name in names:
    result = summary["benchmarks"][name]
    assert (result["num_problems"], result["k"]) == (1, 1), (name, result)
    assert 1 <= result["mean_length"] <= 4
  with open("eval_results/samples.jsonl", encoding="utf-8") as f:
    assert len(f.readlines()) == 6
  with open("eval_results/report.md", encoding="utf-8") as f:
    assert "| model | AIME24 | AIME25 | MATH500 | AMC23 | Minerva | Olympiad |" in f.read()


def test_readme_commands_are_each_run_by_a_test():
  """Each README eval / generate / convert command is one that a test runs (readme_helpers)."""
  tested = [readme.readme_command(key) for key in readme.TESTED]  # each key: exactly one
  for argv in readme.shell_commands():
    if argv[:1] == ["hicra-jax"] and argv[1:2] in (["eval"], ["generate"], ["convert"]) \
        and "--help" not in argv:
      assert argv in tested, f"no test runs the README command {argv}; add it to readme_helpers"
  # A command in the prose is a shortened form of one of them.
  for argv in readme.inline_commands():
    if argv[1:2] in (["eval"], ["generate"], ["convert"]) and "--help" not in argv:
      assert any(set(argv) <= set(command) for command in tested), (
          f"the README's `{' '.join(argv)}` is not part of a command a test runs")
