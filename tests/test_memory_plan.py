"""The per-device memory plan (train/memory_plan.py) and `hicra-jax train --config.dry_run=True`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hicra_jax.models import Decoder, ModelConfig, VisionConfig, VisionInputs
from hicra_jax.models import vision as VT
from hicra_jax.models.decoder import REMAT_POLICIES
from hicra_jax.sampling.sampler import kv_cache_bytes, prompts_per_call
from hicra_jax.train.memory_plan import (GIB, QWEN25_VL_MAX_PIXELS, activation_bytes,
                                         image_max_pixels, image_patch_slots, memory_plan,
                                         mesh_sizes, read_model_config, vision_activation_bytes)
from hicra_jax.train.run_config import (LossConfig, MeshConfig, ModelSettings, RolloutConfig,
                                         RunConfig)
from hicra_jax.train.step import completion_logprobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "configs", "qwen3_4b_instruct_2507_hicra.py")
# Qwen3-4B's published config.json fields (Qwen/Qwen3-4B-Instruct-2507).
QWEN3_4B = {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 151936, "tie_word_embeddings": True, "rope_theta": 5000000,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 262144, "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"]}


def _small_run(mesh=MeshConfig(), rows_per_call="16", kl_coef=0.1) -> RunConfig:
  """The "random" model (vocab 16, D 32, F 64, 2 layers, 2 heads, 1 KV head, head_dim 16)."""
  return RunConfig(
      model=ModelSettings(mesh=mesh),
      rollout=RolloutConfig(prompts_per_step=8, group_size=8, max_new_tokens=(4, 8),
                            prompt_buckets=(4, 32), rows_per_call=rows_per_call),
      loss=LossConfig(kl_coef=kl_coef, micro_batch_size=8))


def test_small_config_figures_by_hand():
  run = _small_run()
  model_config = read_model_config(run.model)
  # embed 16x32 + lm_head 32x16 + final norm 32 + 2 layers x (2 norms 2x32, wq 32x32, wk 32x16,
  # wv 32x16, wo 32x32, gate/up/down 3 x 32x64) = 512 + 512 + 32 + 2 x 9280.
  params = 512 + 512 + 32 + 2 * (64 + 1024 + 512 + 512 + 1024 + 3 * 2048)
  assert model_config.num_params == params == 19616
  plan = memory_plan(run, model_config, devices=1, device_bytes=GIB)
  assert plan.params == params * 4  # float32
  assert plan.optimizer == 2 * params * 4  # AdamW mu and nu
  assert plan.gradients == 2 * params * 4  # accumulator + one micro-batch's
  assert plan.reference == params * 4  # kl_coef > 0
  slots = 32 + 8  # largest bucket + largest max_new_tokens
  assert plan.rows_per_call == 16 and plan.seq_len == slots
  # k and v: layers x rows x slots x kv heads x head_dim x 4 B, + a bool per row and slot.
  assert plan.kv_cache == 2 * (2 * 16 * slots * 1 * 16) * 4 + 16 * slots == 164480
  assert plan.rollout_logits == 16 * 16 * 4
  # 64 rows x (40 x (4 + 1) + 8 x (4 + 1 + 1 + 4 + 4 (reference log-probs))).
  assert plan.update_batch == 64 * (slots * 5 + 8 * 14)
  assert plan.micro_rows == 8
  assert plan.total == plan.resident + max(plan.rollout, plan.update)
  assert plan.fits and plan.advice() == []
  assert "KL reference params" in plan.report() and "fits" in plan.report()


def test_refill_pool_kv_is_the_slots_plus_the_prompts_kv_by_hand():
  run = _small_run()
  run = RunConfig(model=run.model, loss=run.loss, rollout=RolloutConfig(
      prompts_per_step=8, group_size=8, max_new_tokens=(4, 8), prompt_buckets=(4, 32),
      refill_slots=12))
  plan = memory_plan(run, read_model_config(run.model), devices=1, device_bytes=GIB)
  # 12 slots x (32 + 8) cache slots, plus the 8 prompts' KV at the largest bucket (32):
  # k and v = layers x rows x slots x kv heads x head_dim x 4 B, + a bool per row and slot.
  pool = 2 * (2 * 12 * 40 * 1 * 16) * 4 + 12 * 40
  prompts = 2 * (2 * 8 * 32 * 1 * 16) * 4 + 8 * 32
  assert plan.rows_per_call == 12 and plan.kv_cache == pool + prompts == 189152


def test_sharded_figures_and_mesh_sizes():
  assert mesh_sizes(MeshConfig(data=2, fsdp=-1), 8) == (2, 4, 1)
  assert mesh_sizes(MeshConfig(), 8) == (1, 1, 1)  # no mesh: one device
  with pytest.raises(ValueError, match="needs 4 devices"):
    mesh_sizes(MeshConfig(data=2, fsdp=2), 8)
  run = _small_run(mesh=MeshConfig(data=2, fsdp=2), kl_coef=0.0)
  plan = memory_plan(run, read_model_config(run.model), devices=4, device_bytes=None)
  assert plan.params == 19616 * 4 // 2 and plan.reference == 0  # over fsdp x tensor = 2
  # rows_per_call 16 = 2 prompts, raised to one prompt per batch shard (4): 32 rows over 4.
  assert plan.rows_per_call == 32
  assert plan.kv_cache == (2 * (2 * 32 * 40 * 16) * 4 + 32 * 40) // 4
  assert plan.micro_rows == 2 and plan.fits  # unknown device memory never fails


@pytest.mark.parametrize("free_mib", [1, 4, 64])
def test_auto_rows_match_the_sampler(free_mib):
  run = _small_run(rows_per_call="auto", kl_coef=0.0)
  model_config = read_model_config(run.model)
  model = Decoder(model_config, rngs=nnx.Rngs(0))
  resident = 3 * model_config.num_params * 4  # what the sampler sees in use
  plan = memory_plan(run, model_config, devices=1, device_bytes=resident + free_mib * 2 ** 20)
  # By hand: the groups of 8 rows whose KV cache (a real Decoder's) fits in 75% of the free
  # memory, at least one, at most the 8 prompts.
  per_row = kv_cache_bytes(model, 1, 40)
  expected = min(8, max(1, int(free_mib * 2 ** 20 * 0.75 // per_row) // 8))
  assert plan.rows_per_call == expected * 8
  assert expected == prompts_per_call(8, 8, per_row, free_bytes=free_mib * 2 ** 20)


def _cli(tmp_path, *overrides):
  model = tmp_path / "qwen3_4b"
  if not model.exists():
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN3_4B))
    (tmp_path / "prompts.jsonl").write_text('{"problem": "1 + 1?", "answer": "2"}\n')
  env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  # attention cudnn: what "auto" picks on the GPUs this plans for (on CPU it would be xla).
  cmd = [sys.executable, "-m", "hicra_jax.cli", "train", "--config", PRESET,
         f"--config.model.path={model}", f"--config.data.path={tmp_path / 'prompts.jsonl'}",
         f"--config.workdir={tmp_path / 'run'}", "--config.dry_run=True",
         "--config.model.attention=cudnn", *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def test_dry_run_qwen3_4b_preset(tmp_path):
  # The preset as it is (mesh fsdp=-1 x tensor=2, remat full) on 8 x 80 GB fits, and nothing
  # was loaded to find out.
  out = _cli(tmp_path, "--config.device_memory_gb=80")
  assert out.returncode == 0, out.stdout + out.stderr[-3000:]
  assert "8 devices, mesh data=1 fsdp=4 tensor=2" in out.stdout
  assert "params " in out.stdout and "80.00 GiB  fits" in out.stdout
  # fsdp 8 with dots_no_batch: one group of 16 rows x 34816 slots per device is 76.5 GiB of
  # KV cache alone, and dots_no_batch keeps 164 GiB of projections: the plan says how to fit.
  out = _cli(tmp_path, "--config.device_memory_gb=80", "--config.model.mesh.fsdp=8",
             "--config.model.mesh.tensor=1", "--config.model.remat=dots_no_batch")
  assert out.returncode == 2, out.stdout + out.stderr[-3000:]
  assert "DOES NOT FIT" in out.stdout
  advice = out.stdout.split("to fit, change in this order:")[1]
  assert advice.index("model.remat=full") < advice.index("model.mesh.tensor=2")
  # One 24 GB device: the micro-batch goes first, then the remat policy.
  out = _cli(tmp_path, "--config.device_memory_gb=24", "--config.model.mesh.fsdp=1",
             "--config.model.mesh.tensor=1", "--config.model.remat=dots_no_batch")
  assert out.returncode == 2, out.stdout + out.stderr[-3000:]
  advice = out.stdout.split("to fit, change in this order:")[1]
  assert advice.index("loss.micro_batch_size=1") < advice.index("model.remat=full")
  assert "model.mesh." in advice


@pytest.mark.parametrize("attention", ["chunked", "xla"])
@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_activation_estimate_matches_xla(remat, attention):
  """Within a factor of 2 of XLA's temp buffers for forward + backward (measured on CPU,
  float32: 0.79 / 0.88 / 0.91 (chunked none / full / dots), 1.02 / 1.12 / 1.47 (xla))."""
  config = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=192, num_layers=4,
                       num_heads=4, num_kv_heads=2, head_dim=16)
  rows, seq_len = 4, 256
  model = Decoder(config, rngs=nnx.Rngs(0), attention_impl=attention, remat=remat)
  graphdef, params = nnx.split(model)

  def summed_logprobs(params, tokens):
    lp, _ = completion_logprobs(nnx.merge(graphdef, params), tokens,
                                jnp.ones(tokens.shape, bool), seq_len - 1)
    return lp.sum()

  tokens = jnp.zeros((rows, seq_len), jnp.int32)
  compiled = jax.jit(jax.grad(summed_logprobs)).lower(params, tokens).compile()
  measured = compiled.memory_analysis().temp_size_in_bytes
  estimate = activation_bytes(config, rows=rows, seq_len=seq_len, remat=remat,
                              attention=attention, compute_bytes=4)
  assert 0.5 < estimate / measured < 2.0, (estimate, measured)


# ------------------------------------------------------------------ vision tower

TINY_VL = ModelConfig(
    vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=1, num_heads=4,
    num_kv_heads=2, head_dim=16, qkv_bias=True, architecture="Qwen2_5_VLForConditionalGeneration",
    mrope_section=(4, 2, 2), image_token_id=60,
    vision=VisionConfig(depth=4, hidden_size=64, intermediate_size=128, num_heads=4,
                        out_hidden_size=64, window_size=56, fullatt_block_indexes=(1, 3)))


def _square_image_rows(rows: int, side_patches: int) -> VisionInputs:
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(side_patches ** 2, TINY_VL.vision.patch_dim)).astype(np.float32)
  return VisionInputs.from_rows(TINY_VL, [(pixels, np.array([[1, side_patches, side_patches]]))]
                                * rows)


@pytest.mark.parametrize("max_pixels, side_patches", [(448 * 448, 32), (500 * 500, 34)])
def test_image_patch_slots_are_the_layouts(max_pixels, side_patches):
  """A square image at max_pixels (sides cut to multiples of 28 px) fills the slots
  VisionInputs lays out for it (window blocks, bucketed)."""
  slots = _square_image_rows(1, side_patches).patches_NxXxC.shape[1]
  assert image_patch_slots(TINY_VL.vision, max_pixels) == slots
  assert slots == {32: 64 * 16, 34: 88 * 16}[side_patches]  # 64 windows; 81 -> bucket 88


@pytest.mark.parametrize("attention", ["chunked", "xla"])
@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_vision_activation_estimate_matches_xla(remat, attention):
  """Within a factor of 2 of XLA's temp buffers for the tower's forward + backward
  (measured on CPU, float32: 0.85 / 1.03 / 1.02 (chunked none / full / dots), 0.80 / 0.72 /
  1.24 (xla))."""
  vision = _square_image_rows(2, 32)
  params = nnx.to_pure_dict(nnx.state(Decoder(TINY_VL, rngs=nnx.Rngs(0)).visual, nnx.Param))

  def summed_embeddings(params):
    return VT.vision_tower(params, TINY_VL.vision, vision, dtype=jnp.float32,
                           full_attention=attention, remat_policy=REMAT_POLICIES[remat],
                           checkpoint=remat != "none").sum()

  compiled = jax.jit(jax.grad(summed_embeddings)).lower(params).compile()
  measured = compiled.memory_analysis().temp_size_in_bytes
  estimate = vision_activation_bytes(TINY_VL, rows=2, patch_slots=1024, remat=remat,
                                     attention=attention, compute_bytes=4)
  assert 0.5 < estimate / measured < 2.0, (estimate, measured)


def test_vision_language_plan_adds_the_towers_activations():
  run = _small_run()
  run = dataclasses.replace(run, data=dataclasses.replace(run.data, image_max_pixels=448 * 448))
  plan = memory_plan(run, TINY_VL, devices=1, device_bytes=GIB)
  expected = vision_activation_bytes(TINY_VL, rows=8, patch_slots=1024, remat=run.model.remat,
                                     attention=plan.attention, compute_bytes=4)
  assert plan.image_patches == 1024 and plan.vision_activations == expected > 0
  assert plan.update == plan.gradients + plan.update_batch + plan.activations + expected
  assert "vision tower activations (8 rows x 1024 patches)" in plan.report()
  text = memory_plan(_small_run(), read_model_config(run.model), devices=1, device_bytes=GIB)
  assert text.vision_activations == 0 and "vision tower" not in text.report()


def test_image_max_pixels_comes_from_the_config_then_the_model_folder(tmp_path):
  settings = lambda pixels, path: types.SimpleNamespace(
      data=types.SimpleNamespace(image_max_pixels=pixels),
      model=types.SimpleNamespace(path=str(path)))
  assert image_max_pixels(settings(1000, tmp_path)) == 1000
  assert image_max_pixels(settings(0, tmp_path)) == QWEN25_VL_MAX_PIXELS  # no processor file
  (tmp_path / "preprocessor_config.json").write_text(json.dumps({"max_pixels": 802816}))
  assert image_max_pixels(settings(0, tmp_path)) == 802816
  (tmp_path / "preprocessor_config.json").write_text(
      json.dumps({"size": {"shortest_edge": 3136, "longest_edge": 501760}}))  # transformers 5
  assert image_max_pixels(settings(0, tmp_path)) == 501760
