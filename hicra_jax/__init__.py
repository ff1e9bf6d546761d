"""hicra-jax: HICRA and GRPO for reasoning LLMs in JAX.

Shape legend. An array's name ends with its shape, one letter per dimension
(`logprobs_NxT` is f32[N, T]); a letter means the same dimension everywhere:

  N  rows of a batch: sequences (P prompts x G samples in an RL step)
  P  prompts                      G  samples per prompt (group size, the k of pass@k)
  B  mini-batches (optimizer steps per epoch)                M  micro-batches per step
  I  prompt tokens (left-padded to a bucket)
  T  positions being processed or scored (the completion in an RL batch)
  S  key positions: KV-cache slots, or the whole prompt + completion sequence
  L  decoder layers               D  model width           F  MLP width
  V  vocabulary                   Q  query heads           K  key/value heads
  R  query heads per key/value head                         H  head dimension
  Z  Strategic Grams (distinct SG ids)                      E  SG-trie entries
  W  tokens of an SG occurrence (window length)
"""

__version__ = "0.1.0"
