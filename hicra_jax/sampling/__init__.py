"""Sampling: jitted prefill + decode with groups, log-probs and stop handling."""

from hicra_jax.sampling.params import FINISH_LENGTH, FINISH_STOP, Rollout, SamplingParams
from hicra_jax.sampling.sampler import (DEFAULT_PROMPT_BUCKETS, DeviceRollout,
                                        GenerationInterrupted, generate, generate_arrays,
                                        num_compilations, sample_token)

__all__ = ["DEFAULT_PROMPT_BUCKETS", "DeviceRollout", "FINISH_LENGTH", "FINISH_STOP",
           "GenerationInterrupted", "Rollout", "SamplingParams", "generate", "generate_arrays",
           "num_compilations", "sample_token"]
