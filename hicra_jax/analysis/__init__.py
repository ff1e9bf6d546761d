"""Training-dynamics diagnostics: pure functions on arrays or strings.

  semantic_entropy(sg_counts)                       # nats; SG diversity of a batch
  sg_conditional_entropy_tokens(ids, planning_mask) # H(next n tokens | SG)
  sg_conditional_entropy_jax(ids, planning_mask)    # the same, jitted on device
  sg_conditional_entropy_text(texts, grams)         # H(next n words | SG)
  fork_overlap(entropy, planning_mask, mask)        # top-20% entropy tokens vs planning
"""

from hicra_jax.analysis.forks import fork_overlap

from hicra_jax.analysis.semantic import (conditional_entropy, entropy_of_counts,
                                         semantic_entropy, semantic_entropy_jax,
                                         sg_conditional_entropy_jax,
                                         sg_conditional_entropy_text,
                                         sg_conditional_entropy_tokens,
                                         sg_follow_pairs_text, sg_follow_pairs_tokens)

__all__ = ["conditional_entropy", "entropy_of_counts", "fork_overlap", "semantic_entropy",
           "semantic_entropy_jax", "sg_conditional_entropy_jax", "sg_conditional_entropy_text",
           "sg_conditional_entropy_tokens", "sg_follow_pairs_text",
           "sg_follow_pairs_tokens"]
