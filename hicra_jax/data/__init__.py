"""Datasets and prompt rendering (the one place prompts are built)."""

from hicra_jax.data.prompts import (DEFAULT_INSTRUCTION, StopTokens, encode_prompts, render_prompt,
                                    stop_tokens)

__all__ = ["DEFAULT_INSTRUCTION", "StopTokens", "encode_prompts", "render_prompt", "stop_tokens"]
