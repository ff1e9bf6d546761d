"""SamplingParams and Rollout: what the sampler is asked for and what it returns."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hicra_jax.data.prompts import stop_tokens

FINISH_STOP = "stop"      # the row produced one of the stop tokens
FINISH_LENGTH = "length"  # the row reached max_new_tokens


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample. Frozen and hashable (parts of it are static under jit).

  Attributes:
    n: samples per prompt (the group size G); rows of a prompt are contiguous.
    max_new_tokens: completion length limit.
    temperature: logits are divided by it before sampling; the returned
      log-probs are log softmax(logits / temperature) at the sampled token.
    top_p: nucleus sampling (1.0 disables).
    top_k: sample among the k most likely tokens (0 disables).
    min_p: drop tokens with probability < min_p x the top probability (0 disables).
    greedy: argmax decoding (temperature still defines the log-probs).
    stop_ids: token ids that end a row (the stop token is part of the
      completion). None: the model config's EOS; () disables stopping.
  """

  n: int = 1
  max_new_tokens: int = 256
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  min_p: float = 0.0
  greedy: bool = False
  stop_ids: tuple[int, ...] | None = None

  def __post_init__(self):
    def bad(field, expected):
      raise ValueError(f"SamplingParams.{field} = {getattr(self, field)!r}: expected {expected}")
    if not isinstance(self.n, int) or self.n < 1:
      bad("n", "an int >= 1")
    if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
      bad("max_new_tokens", "an int >= 1")
    if not self.temperature > 0:
      bad("temperature", "> 0 (use greedy=True for argmax decoding)")
    if not 0 < self.top_p <= 1:
      bad("top_p", "in (0, 1]")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      bad("top_k", "an int >= 0")
    if not 0 <= self.min_p < 1:
      bad("min_p", "in [0, 1)")
    if self.stop_ids is not None:
      object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))

  @classmethod
  def for_tokenizer(cls, tokenizer, **kwargs) -> "SamplingParams":
    """Params whose stop ids come from the tokenizer's chat template and EOS."""
    kwargs.setdefault("stop_ids", stop_tokens(tokenizer).ids)
    return cls(**kwargs)

  def resolved_stop_ids(self, eos_token_id) -> tuple[int, ...]:
    if self.stop_ids is not None:
      return self.stop_ids
    if eos_token_id is None:
      return ()
    return tuple(eos_token_id) if isinstance(eos_token_id, (tuple, list)) else (eos_token_id,)


@dataclasses.dataclass
class Rollout:
  """Sampled completions (host numpy arrays). N = prompts x n rows, T = max_new_tokens.

  Attributes:
    tokens: i32[N, T] completion tokens (0 after a row's end).
    logprobs: f32[N, T] log softmax(logits / temperature) at each sampled
      token, not truncated by top-p/top-k/min-p (0 outside the mask).
    completion_mask: bool[N, T] real completion tokens (the stop token included).
    lengths: i32[N] completion lengths.
    finish_reason: str[N], "stop" or "length".
    prompt_index: i32[N] prompt of each row (row i belongs to prompt i // n).
  """

  tokens: np.ndarray
  logprobs: np.ndarray
  completion_mask: np.ndarray
  lengths: np.ndarray
  finish_reason: np.ndarray
  prompt_index: np.ndarray

  @property
  def group_size(self) -> int:
    return int(np.sum(self.prompt_index == 0))

  @classmethod
  def concatenate(cls, parts: Sequence[Rollout]) -> Rollout:
    """The rollouts of consecutive prompt chunks as one (prompt indices continue)."""
    if len(parts) == 1:
      return parts[0]
    offsets = np.cumsum([0] + [int(p.prompt_index.max()) + 1 for p in parts[:-1]])
    fields = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
              for f in dataclasses.fields(cls) if f.name != "prompt_index"}
    return cls(**fields, prompt_index=np.concatenate(
        [p.prompt_index + offset for p, offset in zip(parts, offsets)]).astype(np.int32))

  def token_lists(self, *, include_stop: bool = True) -> list[list[int]]:
    """Each row's completion ids (without the stop token when include_stop=False)."""
    out = []
    for row, length, reason in zip(self.tokens, self.lengths, self.finish_reason):
      keep = int(length) - (0 if include_stop or reason != FINISH_STOP else 1)
      out.append(row[:keep].tolist())
    return out

  def texts(self, tokenizer) -> list[str]:
    """Completion text of each row, stop token excluded."""
    return [tokenizer.decode(ids, skip_special_tokens=False)
            for ids in self.token_lists(include_stop=False)]


def prompts_as_lists(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
  """Validated list of non-empty int lists."""
  if isinstance(prompts, (str, bytes)) or not len(prompts):
    raise ValueError("prompts must be a non-empty list of token-id lists")
  out = []
  for i, p in enumerate(prompts):
    ids = [int(t) for t in p]
    if not ids:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    out.append(ids)
  return out
