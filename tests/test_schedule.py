"""The learning-rate schedule (optax) against the closed-form warmup + cosine formula."""

from __future__ import annotations

import itertools
import math

import numpy as np

from hicra_jax.train import state as state_lib


def _closed_form(cfg: state_lib.OptimizerConfig, count: int) -> float:
  lr = cfg.lr
  if cfg.warmup_steps:
    lr *= min(1.0, (count + 1) / cfg.warmup_steps)
  if cfg.schedule == "cosine":
    span = max(cfg.total_steps - cfg.warmup_steps, 1)
    progress = min(max((count - cfg.warmup_steps) / span, 0.0), 1.0)
    end = cfg.final_lr_fraction
    lr *= end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
  return lr


def test_schedule_matches_the_closed_form_for_every_warmup_and_schedule():
  for warmup, schedule, total, end in itertools.product(
      (0, 1, 2, 5), ("constant", "cosine"), (1, 6, 30), (0.0, 0.25)):
    if warmup > total:
      continue
    cfg = state_lib.OptimizerConfig(lr=3e-4, warmup_steps=warmup, schedule=schedule,
                                    total_steps=total, final_lr_fraction=end)
    f = state_lib.learning_rate_schedule(cfg)
    counts = range(0, total + 4)
    np.testing.assert_allclose([float(f(k)) for k in counts],
                               [_closed_form(cfg, k) for k in counts], rtol=1e-5,
                               err_msg=str(cfg))
