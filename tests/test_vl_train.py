"""Training and evaluation with images: a tiny random Qwen2.5-VL built and saved by transformers
here, images generated with PIL.

References: transformers' Qwen2_5_VLForConditionalGeneration, one unpadded row at a time with its
own pixel_values and image_grid_thw, for the log-probs the update recomputes (rows left-padded
together and split into strided micro-batches, each row taking its prompt's images); the
sampler's log-probs for the update's forward pass in a training run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from hicra_jax import cli
from hicra_jax import config as config_lib
from hicra_jax.data import images as images_lib
from hicra_jax.eval.harness import vision_rows
from hicra_jax.train import batch as batch_lib
from hicra_jax.train import rollout as rollout_lib
from hicra_jax.train import step as step_lib
from hicra_jax.train.state import OptimizerConfig, create_train_state, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE, VIDEO, START, END = 151655, 151656, 151652, 151653  # Qwen2.5-VL's (and Qwen3's) ids
MAX_PIXELS = 28 * 28 * 16  # at most 16 image tokens per image: small and fast


def _image(path, height, width, seed):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
  return str(path)


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
  """(folder, transformers model): 2 decoder layers, a 2-block vision tower (one window
  block, one full-attention block), the Qwen3 tokenizer's files (its vision tokens are
  Qwen2.5-VL's) and a small-image preprocessor_config.json."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import (  # pylint: disable=import-outside-toplevel
      Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
  from hicra_jax import assets  # pylint: disable=import-outside-toplevel
  folder = tmp_path_factory.mktemp("tiny_qwen25_vl")
  config = Qwen2_5_VLConfig(
      text_config=dict(vocab_size=151936, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=4096, tie_word_embeddings=False,
                       rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
                       initializer_range=0.2),
      vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                         out_hidden_size=32, patch_size=14, temporal_patch_size=2,
                         spatial_merge_size=2, window_size=56, fullatt_block_indexes=[1],
                         in_channels=3, initializer_range=0.2),
      image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
      vision_end_token_id=END, initializer_range=0.2)
  torch.manual_seed(0)
  reference = Qwen2_5_VLForConditionalGeneration(config).eval()
  reference.save_pretrained(folder)
  for name in os.listdir(assets.qwen3_tokenizer_dir()):
    shutil.copy(os.path.join(assets.qwen3_tokenizer_dir(), name), folder)
  images_lib.image_processor(min_pixels=56 * 56, max_pixels=MAX_PIXELS).save_pretrained(folder)
  return str(folder), reference


@pytest.fixture(scope="module")
def ours(tiny_vl):
  from hicra_jax.models import load_pretrained  # pylint: disable=import-outside-toplevel
  return load_pretrained(tiny_vl[0])


@pytest.fixture(scope="module")
def batch_rows(tmp_path_factory):
  """Three prompts (one image; two images of different sizes; text only), 2 samples each,
  5 completion tokens (one row shorter): prompts, pixels per prompt, completions, mask."""
  folder = tmp_path_factory.mktemp("images")
  processor = images_lib.image_processor(min_pixels=56 * 56, max_pixels=MAX_PIXELS)
  paths = [_image(folder / f"{i}.png", h, w, i) for i, (h, w) in
           enumerate([(56, 84), (112, 56), (60, 60)])]
  pixels = [images_lib.pixel_inputs(p, processor, "test") for p in ([paths[0]], paths[1:])]
  pixels.append(None)
  rng = np.random.default_rng(0)
  prompts = []
  for p in pixels:
    ids = rng.integers(10, 1000, 3).tolist()
    for n in ([] if p is None else images_lib.image_token_counts(p.image_grid_thw, 2)):
      ids += [START] + [IMAGE] * n + [END]
    prompts.append(ids + rng.integers(10, 1000, 2 + len(prompts)).tolist())
  completions = rng.integers(10, 1000, (6, 5)).astype(np.int32)
  mask = np.ones((6, 5), bool)
  mask[1, 3:] = False
  return prompts, pixels, completions, mask


def _reference_logprobs(reference, prompts, pixels, completions, mask, group_size):
  """f32[N, T]: transformers' log-probs of each row's completion tokens, one unpadded row at a
  time with its prompt's own images (0 outside the mask)."""
  import torch  # pylint: disable=import-outside-toplevel
  out = np.zeros(completions.shape, np.float32)
  for i, row in enumerate(completions):
    prompt, p = prompts[i // group_size], pixels[i // group_size]
    n = int(mask[i].sum())
    ids = torch.tensor([list(prompt) + row[:n].tolist()])
    # mm_token_type_ids: transformers 5 computes the multimodal RoPE positions only with it.
    kwargs = {} if p is None else dict(pixel_values=torch.tensor(p.pixel_values),
                                       image_grid_thw=torch.tensor(p.image_grid_thw),
                                       mm_token_type_ids=(ids == IMAGE).int())
    with torch.no_grad():
      logp = torch.log_softmax(reference(input_ids=ids, **kwargs).logits[0].float(), -1)
    for t in range(n):
      out[i, t] = logp[len(prompt) - 1 + t, row[t]].item()
  return out


def _sequences(prompts, completions, mask, group_size):
  prompt_len = max(len(p) for p in prompts) + 3  # left padding on every row
  tokens, attention = step_lib.build_sequences(prompts, completions, mask, group_size, prompt_len)
  return jnp.asarray(tokens), jnp.asarray(attention)


def test_update_logprobs_take_each_rows_prompt_images(tiny_vl, ours, batch_rows):
  """policy_logprobs over left-padded rows in strided micro-batches, each row's images taken
  from the prompts' VisionInputs by prompt_index: transformers' per-row log-probs."""
  model, config = ours
  prompts, pixels, completions, mask = batch_rows
  tokens, attention = _sequences(prompts, completions, mask, 2)
  vision = batch_lib.place_vision(vision_rows(config, pixels), None)
  index = np.repeat(np.arange(3, dtype=np.int32), 2)
  graphdef, params = nnx.split(model)
  score = lambda idx: np.asarray(step_lib.policy_logprobs(
      graphdef, params, tokens, attention, jnp.float32(1.0), num_completion=5, micro_batches=2,
      vision=vision, prompt_index_N=jnp.asarray(idx))[0])
  expected = _reference_logprobs(tiny_vl[1], prompts, pixels, completions, mask, 2)
  error = np.abs(np.where(mask, score(index) - expected, 0)).max()
  assert error < 1e-4, error
  # The images matter: the rows scored with the other prompts' images are far off.
  swapped = np.abs(np.where(mask, score(index[[2, 3, 0, 1, 4, 5]]) - expected, 0)).max()
  assert swapped > 100 * max(error, 1e-6), (swapped, error)
  # The update itself (its forward pass is the same, per micro-batch: the end-to-end test
  # below checks it against the sampler's) needs each row's prompt with images.
  optimizer = make_optimizer(OptimizerConfig(lr=1e-3, total_steps=1))
  graphdef, state = create_train_state(nnx.clone(model), optimizer)
  zeros = jnp.zeros(mask.shape)
  batch = step_lib.Batch(tokens, attention, jnp.asarray(mask), zeros, None,
                         jnp.zeros(mask.shape, bool), None)
  with pytest.raises(ValueError, match="need batch.prompt_index"):
    step_lib.update(state, batch, None, vision, graphdef=graphdef, optimizer=optimizer,
                    cfg=step_lib.UpdateConfig())


def test_sampled_image_tokens_stay_out_of_the_loss():
  """A completion that samples an image token (a stop token for a vision-language run) keeps
  it out of the loss mask, so neither the planner nor the update's forward pass sees it."""
  from hicra_jax.sampling import DeviceRollout  # pylint: disable=import-outside-toplevel
  tokens = np.asarray([[7, 8, 9, 0], [7, IMAGE, 0, 0], [START, 5, 6, END], [1, 2, 3, 4]],
                      np.int32)
  mask = np.asarray([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)

  def sample_fn(examples, key):
    del key
    arrays = DeviceRollout(jnp.asarray(tokens), jnp.zeros(tokens.shape), jnp.zeros(tokens.shape),
                           jnp.asarray(mask), jnp.asarray(mask[:, -1] == 0))
    rollout = arrays.to_host(2)
    return rollout_lib.Sampled([[1, 2]] * 2, arrays, rollout, rollout.token_lists(), None)

  class Stream:
    def take(self, k):
      return [{"id": i, "prompt_ids": [1, 2]} for i in range(k)]

  reward = lambda completions, texts, examples, g: (np.asarray([1.0, 0.0, 1.0, 0.0]), 0)
  collect = lambda ids: rollout_lib.collect(sample_fn, Stream(), jax.random.key(0), reward,
                                            group_size=2, prompts_per_step=2,
                                            dynamic_filter=False, max_rounds=1, exclude_ids=ids)
  text = collect(())
  np.testing.assert_array_equal(np.asarray(text.loss_mask_NxT), mask)  # the text path
  vl = collect(rollout_lib.vision_token_ids(_vl_config()))
  expected = mask & ~np.isin(tokens, [IMAGE, VIDEO, START, END])
  np.testing.assert_array_equal(np.asarray(vl.loss_mask_NxT), expected)
  np.testing.assert_array_equal(np.asarray(vl.completion_mask_NxT), mask)
  seen = []
  planner = lambda t, m: (seen.append(np.asarray(m)) or jnp.asarray(m), jnp.zeros((4, 1), int))
  credit = batch_lib.token_credit(vl, planner, batch_lib.CreditOptions("hicra", 0.2, 2))
  np.testing.assert_array_equal(seen[0], expected)
  assert not np.asarray(credit.planning_NxT)[~expected].any()
  batch = batch_lib.assemble_batch(vl, credit, group_size=2, prompt_buckets=(4,),
                                   update_cfg=step_lib.UpdateConfig())
  completion = np.asarray(batch.tokens)[:, 4:]
  assert not np.isin(completion, [IMAGE, START, END]).any()
  np.testing.assert_array_equal(np.asarray(batch.attention)[:, 4:], expected)


def _vl_config():
  return types.SimpleNamespace(is_multimodal=True, image_token_id=IMAGE, video_token_id=VIDEO,
                               vision_start_token_id=START, vision_end_token_id=END)


def test_vision_token_ids(ours):
  assert rollout_lib.vision_token_ids(ours[1]) == (IMAGE, VIDEO, START, END)
  assert rollout_lib.vision_token_ids(types.SimpleNamespace(is_multimodal=False)) == ()


# --------------------------------------------------------------------- the preset


@pytest.mark.parametrize("algorithm", ["hicra", "grpo", "entropy_reg"])
def test_vl_preset_loads_with_every_algorithm(tmp_path, algorithm):
  data = tmp_path / "virl39k.jsonl"
  data.write_text(json.dumps({"question": "What is shown?", "answer": "2"}) + "\n")
  model = tmp_path / "model"
  model.mkdir()
  (model / "config.json").write_text("{}")
  path = os.path.join(ROOT, "configs", "qwen25_vl_7b_hicra.py")
  config = cli.load_command_config("train", [
      "hicra-jax train", f"--config={path}", f"--config.algorithm={algorithm}",
      f"--config.data.path={data}", f"--config.model.path={model}"])
  assert config.algorithm == algorithm
  assert config.planning.grams == "paper" and config.planning.alpha == 0.2
  assert config.loss.clip_low == 0.2 and config.loss.clip_high == 0.28
  assert tuple(config.rollout.max_new_tokens) == (16384, 32768)
  assert config.loss.mini_batch_size == 512 and config.mini_batches == 16
  assert config.loss.scale == "group_std" and config.rollout.truncation_threshold == 0.2
  assert config.data.source == "jsonl" and config.data.template == "chat"
  assert config.data.image_max_pixels == 1280 * 28 * 28
  assert config_lib.hub_model_id(config_lib.load_config(path).model.path) == (
      "Qwen/Qwen2.5-VL-7B-Instruct", None)
  with pytest.raises(config_lib.ConfigError) as err:  # the model path must exist
    cli.load_command_config("train", ["hicra-jax train", f"--config={path}",
                                      f"--config.data.path={data}"])
  assert err.value.field == "model.path"
  with pytest.raises(config_lib.ConfigError, match="image_max_pixels"):
    cli.load_command_config("train", [
        "hicra-jax train", f"--config={path}", f"--config.data.path={data}",
        f"--config.model.path={model}", "--config.data.image_min_pixels=5000",
        "--config.data.image_max_pixels=4000"])


# ------------------------------------------------------------------- end to end


def _even_tokens_reward(completions, texts, examples, group_size):
  """A reward a random model's groups disagree on (so the update has advantages)."""
  del texts, examples, group_size
  return np.asarray([np.mean(np.asarray(c) % 2 == 0) if len(c) else 0.0
                     for c in completions], np.float32), 0


def test_a_missing_image_fails_before_the_weights_load(tiny_vl, tmp_path, monkeypatch):
  from hicra_jax.train import build, run_config  # pylint: disable=import-outside-toplevel
  (tmp_path / "train.jsonl").write_text(
      json.dumps({"question": "q", "answer": "1"}) + "\n"
      + json.dumps({"question": "q", "answer": "2", "image": "gone.png"}) + "\n")
  config = run_config.parse(dict(
      workdir=str(tmp_path / "run"), model=dict(path=tiny_vl[0]),
      data=dict(source="jsonl", path=str(tmp_path / "train.jsonl"), template="chat"),
      reward=dict(name="math_strict"), planning=dict(grams="paper"),
      rollout=dict(prompts_per_step=1, group_size=2, max_new_tokens=(4,)),
      loss=dict(micro_batch_size=2)))
  loaded = []
  monkeypatch.setattr(build, "load_pretrained", lambda *a, **k: loaded.append(a))
  with pytest.raises(ValueError, match=r"train.jsonl:2: image 'gone.png' does not exist"):
    build.build_components(config)
  assert not loaded  # no weight was read


def test_trainer_trains_and_evaluates_with_images(tiny_vl, tmp_path):
  """Two HICRA steps of the tiny Qwen2.5-VL on JSONL prompts with images, built from a run
  config, and a MathVista-style benchmark at the last step. The update's first-step policy
  log-probs equal the sampler's (old_logprobs="sampler": ratio 1, KL 0): the sampler's
  prefill and the update's forward pass give each row the same images."""
  from hicra_jax.train import run_config  # pylint: disable=import-outside-toplevel
  from hicra_jax.train.build import build_components  # pylint: disable=import-outside-toplevel
  from hicra_jax.train.loop import Trainer  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "data"
  (folder / "images").mkdir(parents=True)
  sizes = [(56, 84), (84, 56), (60, 60), (112, 112)]
  for i, (h, w) in enumerate(sizes):
    _image(folder / "images" / f"{i}.png", h, w, i)
  rows = [{"question": "What is in the picture?", "answer": "1", "image": "images/0.png"},
          {"question": "Compare the pictures.", "answer": "2",
           "images": ["images/1.png", "images/2.png"]},
          {"question": "What is 1 + 1?", "answer": "2"},
          {"question": "How many squares?", "answer": "4", "image": "images/3.png"}]
  (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  bench = [{"pid": "a", "question": "Which is larger?", "image": "images/3.png",
            "choices": ["left", "right"], "answer": "left"},
           {"pid": "b", "question": "What color?", "image": "images/0.png", "answer": "red"}]
  (folder / "mathvista.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))
  config = run_config.parse(dict(
      num_steps=2, workdir=str(tmp_path / "run"), export_policy=False,
      model=dict(path=tiny_vl[0]),
      data=dict(source="jsonl", path=str(folder / "train.jsonl"), template="chat",
                image_max_pixels=MAX_PIXELS),
      reward=dict(name="math_strict"), planning=dict(grams="paper"),
      rollout=dict(prompts_per_step=2, group_size=2, max_new_tokens=(6,),
                   prompt_buckets=(64, 128), old_logprobs="sampler"),
      loss=dict(micro_batch_size=2), optim=dict(lr=1e-3),
      eval=dict(every=2, samples=2, benchmarks=(f"mathvista={folder / 'mathvista.jsonl'}",)),
      checkpoint=dict(async_save=False), log=dict(tensorboard=False)))
  components = build_components(config)
  assert components.image_processor is not None
  assert {IMAGE, VIDEO, START, END} <= set(components.stop_ids)
  assert components.examples[1]["image_grid_thw"] == [[1, 6, 4], [1, 4, 4]]  # header sizes
  trainer = Trainer(config, dataclasses.replace(components, reward_fn=_even_tokens_reward))
  before = jax.tree_util.tree_map(np.asarray, trainer.state.params)
  try:
    metrics = trainer.run()
  finally:
    trainer.close()
  assert int(trainer.state.step) == 2
  assert metrics["update_finite"] == 1.0 and np.isfinite(metrics["loss"])
  print("ratio_mean - 1:", metrics["ratio_mean"] - 1.0, "approx_kl:", metrics["approx_kl"])
  assert abs(metrics["ratio_mean"] - 1.0) < 1e-4 and abs(metrics["approx_kl"]) < 1e-5, metrics
  assert 0.0 <= metrics["eval_mathvista_avg_at_k"] <= 1.0
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, np.asarray(b)), before,
                                   trainer.state.params)
  assert any(jax.tree_util.tree_leaves(changed))
  with_images = [s for s in trainer.last_samples if "images" in s]
  assert with_images  # 3 of the 4 prompts have images
  for sample in with_images:  # one image-pad shown per image in the sample log
    assert sample["prompt"].count(images_lib.IMAGE_PAD) == len(sample["images"])


def readme_vl_example() -> str:
  """The README's "Vision-language models" Python example (an indented block: a model folder
  of the reader's own, so tests/test_readme.py does not run it; this test does)."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## Vision-language models\n", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"((?:^    .*\n|^\n)+)", section, flags=re.M)
  code = max(blocks, key=len)
  return "\n".join(line[4:] for line in code.splitlines())


def test_readme_vl_example_runs(tiny_vl, tmp_path, capsys):
  code = readme_vl_example()
  assert 'path = "/path/to/Qwen2.5-VL-7B-Instruct"' in code and '"figure.png"' in code
  figure = _image(tmp_path / "figure.png", 70, 50, 7)
  code = code.replace("/path/to/Qwen2.5-VL-7B-Instruct", tiny_vl[0]).replace(
      '"figure.png"', repr(figure))
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert len(namespace["samples"].texts) == 4 and capsys.readouterr().out
  ids, logits = namespace["ids"], namespace["logits"]
  assert logits.shape == (1, len(ids), 151936)
  assert ids.count(IMAGE) == int(np.prod(namespace["grid"][0])) // 4


def test_eval_command_with_images(tiny_vl, tmp_path):
  """`hicra-jax eval` on a vision-language model folder and a MathVista-style benchmark: the
  command gives the sampler the folder's image processor."""
  (tmp_path / "images").mkdir()
  _image(tmp_path / "images" / "1.png", 56, 56, 5)
  bench = tmp_path / "mathvista.jsonl"
  bench.write_text(json.dumps({"pid": "1", "question": "How many?", "image": "images/1.png",
                               "answer": "3"}) + "\n")
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["hicra-jax", "eval", f"--config.model={tiny_vl[0]}",
              f"--config.benchmarks=('mathvista={bench}',)", "--config.k=1",
              "--config.temperature=0", "--config.max_new_tokens=4",
              f"--config.output_dir={tmp_path / 'out'}"])
  assert exit_info.value.code == 0
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["benchmarks"]["mathvista"]["num_problems"] == 1
  assert "| MathVista |" in (tmp_path / "out" / "report.md").read_text()
