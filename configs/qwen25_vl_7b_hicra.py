"""Paper preset: HICRA on Qwen2.5-VL-7B-Instruct (the vision-language runs: Table 2, Figure 8).

  hicra-jax train --config configs/qwen25_vl_7b_hicra.py \
      --config.data.path=/data/virl39k/virl39k.jsonl   # the model: Qwen/Qwen2.5-VL-7B-Instruct
  ... --config.model.path=/models/Qwen2.5-VL-7B-Instruct      # or a local copy
  ... --config.model.path=/models/MiMo-VL-7B                   # MiMO-VL: the same architecture
  ... --config.algorithm=grpo          # the GRPO baseline (or entropy_reg)
  ... --config.eval.benchmarks="('mathvista', 'mathvision', 'mathverse', 'emma')" \
      --config.eval.data_dir=/data/vlm_evals   # <name>/<name>_test.jsonl, MathVista-style

The data is ViRL39K (TIGER-Lab/ViRL39K) written as JSONL, one row per
problem: "question", "answer" (ViRL39K wraps its answers in \\boxed{}; write
the box's content, since the strict reward compares it with the boxed answer
of the completion) and "image" / "images" (paths relative to the JSONL file,
e.g. its images/ folder). The evaluation benchmarks are the same format
(hicra_jax/eval/benchmarks.py), one file per benchmark.

Values and their sources: hicra_jax/train/presets.py; the vision-language ones below.
"""

from __future__ import annotations

from hicra_jax.train.presets import paper_config


def get_config():
  c = paper_config(model="Qwen/Qwen2.5-VL-7B-Instruct",  # [paper] the VLM of Table 2
                   workdir="runs/qwen25_vl_7b_hicra", template="chat")  # [ours] instruct: chat
  c.data.path = "data/virl39k/virl39k.jsonl"  # [paper] ViRL39K prompts; [ours] as JSONL (set it)
  c.data.question_field = "question"  # [ours] ViRL39K's field names
  c.data.answer_field = "answer"
  # [ours] at most 1280 image tokens (28 x 28 pixels each) per image; the model's own
  # preprocessor_config.json allows 16384, far more than an RL batch of 16K-token
  # completions needs. The paper gives no image resolution.
  c.data.image_max_pixels = 1280 * 28 * 28
  c.data.image_min_pixels = 0  # [ours] the model's (3136 pixels: 4 image tokens)
  # [ours] a prompt holds up to 1280 tokens per image besides its text
  c.rollout.prompt_buckets = (512, 1024, 2048, 4096, 8192)
  return c
