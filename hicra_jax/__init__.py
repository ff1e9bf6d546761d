"""hicra-jax: HICRA and GRPO for reasoning LLMs in JAX."""

__version__ = "0.1.0"
