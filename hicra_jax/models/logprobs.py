"""Per-token log-probabilities and entropies without materializing [N, T, V] logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("chunk_size", "raw"))
def token_logprobs_and_entropy(hidden_NxTxD, head_DxV, targets_NxT, temperature=1.0, *,
                               chunk_size: int = 512, raw: bool = False):
  """log softmax(h W / temperature)[target] and the entropy of that distribution.

  Args:
    hidden_NxTxD: final hidden states (any float dtype; the matmul runs in that
      dtype with float32 accumulation).
    head_DxV: output projection (`Decoder.head_weight()`).
    targets_NxT: i32 token whose log-probability is taken at each position
      (usually the input shifted left by one).
    temperature: positive scalar (may be traced); logits are divided by it.
    chunk_size: rows of the flattened [N*T] axis processed at once (static).
    raw: also return the raw policy's (temperature 1) log-probs and entropy,
      from the same logits (static; diagnostics: a softmax more per chunk, no
      second matmul).

  Returns:
    (logprobs f32[N, T], entropy f32[N, T]) in nats; with raw, also
    (raw_logprobs f32[N, T], raw_entropy f32[N, T]).

  Memory: the tokens are processed in chunks of `chunk_size` under
  `jax.checkpoint`, so forward and backward each hold one chunk of float32
  logits, chunk_size x V x 4 bytes (plus a few same-sized temporaries), instead
  of N x T x V x 4 bytes; the backward recomputes each chunk's logits. Peak
  extra memory is O(chunk_size x V + D x V) (the latter: the head gradient).
  """
  n, t, d = hidden_NxTxD.shape
  rows = n * t
  num_chunks = -(-rows // chunk_size)
  pad = num_chunks * chunk_size - rows
  # The N*T flattened rows in chunks: hidden [chunks, chunk_size, D], targets [chunks, chunk_size]
  hidden_chunks = jnp.pad(hidden_NxTxD.reshape(rows, d), ((0, pad), (0, 0))).reshape(
      num_chunks, chunk_size, d)
  target_chunks = jnp.pad(targets_NxT.reshape(rows), (0, pad)).reshape(num_chunks, chunk_size)
  inv_temp = 1.0 / jnp.asarray(temperature, jnp.float32)

  def scores(logits, targets):
    logp = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    target = jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
    return target, -jnp.sum(jnp.exp(logp) * logp, axis=-1)

  @jax.checkpoint
  def chunk(hidden, targets):
    """[chunk_size, D], i32[chunk_size] -> (logprobs, entropy[, raw ones]) f32[chunk_size] each."""
    logits = jnp.einsum("cd,dv->cv", hidden, head_DxV.astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    out = scores(logits * inv_temp, targets)
    if raw:
      out += jax.lax.stop_gradient(scores(logits, targets))
    return out

  def body(carry, xs):
    return carry, chunk(*xs)

  _, outs = jax.lax.scan(body, None, (hidden_chunks, target_chunks))
  return tuple(x.reshape(-1)[:rows].reshape(n, t) for x in outs)


def model_token_logprobs_and_entropy(model, tokens_NxT, attention_mask=None, temperature=1.0, *,
                                     chunk_size: int = 512, vision=None):
  """Log-prob of each next token under `model` and the next-token entropy.

  Position t scores tokens[:, t + 1] given tokens[:, : t + 1]; returns
  (logprobs f32[N, T-1], entropy f32[N, T-1]). vision: the rows' images
  (models/vision_inputs.VisionInputs; Qwen2.5-VL), or None.
  """
  hidden, _ = model.hidden_states(tokens_NxT, attention_mask, vision=vision)
  return token_logprobs_and_entropy(hidden[:, :-1], model.head_weight(), tokens_NxT[:, 1:],
                                    temperature, chunk_size=chunk_size)
