"""Sampling: jitted prefill + decode with groups, log-probs and stop handling."""

from hicra_jax.sampling.params import FINISH_LENGTH, FINISH_STOP, Rollout, SamplingParams
from hicra_jax.sampling.sampler import (DEFAULT_PROMPT_BUCKETS, DeviceRollout,
                                        GenerationInterrupted, generate, generate_arrays,
                                        num_compilations, sample_token)
from hicra_jax.sampling.slot_pool import PoolStats, generate_pooled_arrays, run_pool

__all__ = ["DEFAULT_PROMPT_BUCKETS", "DeviceRollout", "FINISH_LENGTH", "FINISH_STOP",
           "GenerationInterrupted", "PoolStats", "Rollout", "SamplingParams", "generate",
           "generate_arrays", "generate_pooled_arrays", "num_compilations", "run_pool",
           "sample_token"]
