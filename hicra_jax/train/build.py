"""Builds a run's `Components` (model, data, reward, planner) from a train config."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hicra_jax import sharding
from hicra_jax.data import images as images_lib
from hicra_jax.data.datasets import attach_prompt_ids, load_rows
from hicra_jax.data.prompts import stop_tokens
from hicra_jax.eval.benchmarks import load_benchmarks
from hicra_jax.models import Decoder, ModelConfig, load_pretrained, load_tokenizer
from hicra_jax.models.paths import resolve_model
from hicra_jax.planning import SGTrie, load_strategic_grams, planning_mask_and_counts
from hicra_jax.planning.trie import save_bytes
from hicra_jax.rewards import ERROR, TIMEOUT, grade_batch
from hicra_jax.train import synthetic
from hicra_jax.train.loop import Components
from hicra_jax.train.memory_plan import read_model_config
from hicra_jax.train.rollout import vision_token_ids
from hicra_jax.train.run_config import (RANDOM_MODEL, SYNTHETIC, SYNTHETIC_REWARD, MeshConfig,
                                         ModelSettings, RunConfig)

logger = logging.getLogger("hicra_jax.train")


def load_model(m: ModelSettings, *, seed: int = 0, mesh=None, tokenizer=None):
  """(model, ModelConfig, tokenizer or None) of a `model` section, placed on `mesh` if given.

  seed: the init seed of the "random" model. tokenizer: the section's tokenizer when
  already loaded (`load_model_tokenizer`), else loaded here.
  """
  if m.path == RANDOM_MODEL:
    model_config = ModelConfig(**dataclasses.asdict(m.random))
    model = Decoder(model_config, rngs=nnx.Rngs(seed), param_dtype=m.dtype,
                    compute_dtype=m.compute_dtype or None, remat=m.remat,
                    attention_impl=m.attention)
    if mesh is not None:
      sharding.shard_model(model, mesh)
    return model, model_config, None
  path = resolve_model(m.path)
  # Decoder options and the mesh go to the loader: each param is built once, in place.
  model, model_config = load_pretrained(path, dtype=m.dtype, mesh=mesh,
                                        compute_dtype=m.compute_dtype or None, remat=m.remat,
                                        attention_impl=m.attention)
  if tokenizer is None:
    tokenizer = load_model_tokenizer(m)
  return model, model_config, tokenizer


def load_model_tokenizer(m: ModelSettings):
  """The tokenizer of a `model` section (None for the "random" model); no weights are read."""
  if m.path == RANDOM_MODEL:
    return None
  return load_tokenizer(m.tokenizer or m.path)  # resolves aliases; a Hub id's tokenizer files only


def load_image_processor(config: RunConfig, model_config):
  """A vision-language model's image processor (its folder's preprocessor_config.json,
  pixel bounds from data.image_min_pixels / image_max_pixels), or None for a text model.

  Raises:
    ValueError: the processor's patch, merge or temporal patch size differs from the model's.
  """
  if not getattr(model_config, "is_multimodal", False):
    return None
  d = config.data
  bounds = {key: value for key, value in (("min_pixels", d.image_min_pixels),
                                           ("max_pixels", d.image_max_pixels)) if value}
  folder = resolve_model(config.model.path, files=(images_lib.PROCESSOR_FILE,))
  processor = images_lib.image_processor(folder, **bounds)
  vision = model_config.vision
  for name, expected in (("patch_size", vision.patch_size),
                         ("merge_size", vision.spatial_merge_size),
                         ("temporal_patch_size", vision.temporal_patch_size)):
    if getattr(processor, name) != expected:
      raise ValueError(f"{config.model.path}: the image processor's {name} is "
                       f"{getattr(processor, name)} but the model's vision tower takes {expected}")
  return processor


def load_examples(config: RunConfig, tokenizer, processor=None) -> list[dict[str, Any]]:
  """All examples (eval ones first), each with "id" and "prompt_ids" (and, with a
  vision-language model's processor, their images' "image_grid_thw")."""
  d = config.data
  if d.source == SYNTHETIC:
    return synthetic.synthetic_examples(d.size + d.eval_size,
                                        vocab_size=config.model.random.vocab_size,
                                        prompt_len=d.prompt_len, seed=config.seed)
  rows = load_rows(d.source, path=d.path, name=d.name, split=d.split, task=d.task,
                   size=d.size + d.eval_size, seed=config.seed,
                   task_kwargs=d.kwargs, question_field=d.question_field,
                   answer_field=d.answer_field)
  return attach_prompt_ids(rows, tokenizer, template=d.template, processor=processor)


def text_reward_fn(name: str, timeout_s: float):
  """A trainer reward function over texts, from the hicra_jax.rewards registry."""
  def reward(completions, texts, examples: Sequence[Mapping[str, Any]], group_size: int):
    del completions
    grades = grade_batch(name, texts, list(examples), group_size=group_size, timeout_s=timeout_s)
    failures = sum(g.status in (ERROR, TIMEOUT) for g in grades)
    return np.asarray([g.reward for g in grades], np.float32), failures
  return reward


def build_planner(config: RunConfig, tokenizer):
  """(planner, trie bytes)."""
  grams = config.planning.grams
  if grams == SYNTHETIC:
    return functools.partial(synthetic.ngram_planner,
                             pattern=config.planning.synthetic_pattern), b""
  if grams == "none":
    def no_planning(tokens, mask):
      return jnp.zeros(tokens.shape, bool), jnp.zeros((tokens.shape[0], 1), jnp.int32)
    return no_planning, b""
  trie = SGTrie.build(load_strategic_grams(grams), tokenizer)
  return (lambda tokens, mask: planning_mask_and_counts(tokens, trie, mask)), save_bytes(trie)


def make_mesh(mesh: MeshConfig):
  """The run's device mesh, or None for a single-device run (all mesh sizes 1)."""
  sizes = dataclasses.asdict(mesh)
  if all(v == 1 for v in sizes.values()):
    return None
  return sharding.make_mesh(**sizes)


def build_components(config: RunConfig) -> Components:
  """The model (on the run's mesh), examples, reward, planner and KL reference of a run."""
  # The data (rows, prompt tokens, images) is read and checked before the weights load.
  tokenizer = load_model_tokenizer(config.model)
  processor = load_image_processor(config, read_model_config(config.model))
  examples = load_examples(config, tokenizer, processor)
  model, model_config, tokenizer = load_model(config.model, seed=config.seed,
                                              mesh=make_mesh(config.model.mesh),
                                              tokenizer=tokenizer)
  eval_size = config.data.eval_size
  if config.reward.name == SYNTHETIC_REWARD:
    reward_fn = synthetic.synthetic_reward_fn(config.reward.target_token)
    stop_ids: tuple[int, ...] = ()
  else:
    reward_fn = text_reward_fn(config.reward.name, config.reward.timeout_s)
    # A vision-language model's sampled image token ends the completion (never trained on).
    stop_ids = tuple(dict.fromkeys(stop_tokens(tokenizer).ids + vision_token_ids(model_config)))
  planner, trie_bytes = build_planner(config, tokenizer)
  ref_params = None
  if config.loss.kl_coef > 0:
    ref_params = jax.tree_util.tree_map(lambda x: x.copy(), nnx.state(model))
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
  logger.info("model %s: %.1fM params (%s); %d training + %d eval examples; algorithm %s",
              config.model.path, num_params / 1e6, config.model.dtype,
              len(examples) - eval_size, eval_size, config.algorithm)
  ev = config.eval
  benchmarks = load_benchmarks(list(ev.benchmarks), data_dir=os.path.expanduser(ev.data_dir)
                               or None, limit=ev.limit) if ev.benchmarks else []
  return Components(model=model, examples=examples[eval_size:], eval_examples=examples[:eval_size],
                    reward_fn=reward_fn, planner=planner, tokenizer=tokenizer, stop_ids=stop_ids,
                    trie_bytes=trie_bytes, ref_params=ref_params, model_config=model_config,
                    benchmarks=benchmarks, image_processor=processor)
