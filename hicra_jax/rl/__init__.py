"""RL core: GRPO/HICRA advantages, clipped policy loss, KL and entropy terms, DAPO filters.

Pure, jittable functions on arrays (string options and group sizes static);
see DESIGN.md for the row layout (row i belongs to prompt i // G).
"""

from hicra_jax.rl.advantages import (AMPLIFY, ESTIMATORS, GATES, SCALES, fork_token_mask,
                                     grpo_advantages, hicra_advantages, longer_than_group_mean)
from hicra_jax.rl.filters import (OVERLONG_MODES, completion_lengths, dynamic_sampling_mask,
                                  overlong_shaping, soft_overlong_penalty)
from hicra_jax.rl.losses import (AGGREGATIONS, KL_ESTIMATORS, aggregate, combine_accumulated,
                                 kl_penalty, loss_denominator, policy_loss)

__all__ = [
    "AGGREGATIONS", "AMPLIFY", "ESTIMATORS", "GATES", "KL_ESTIMATORS", "OVERLONG_MODES",
    "SCALES", "aggregate", "combine_accumulated", "completion_lengths", "dynamic_sampling_mask",
    "fork_token_mask", "grpo_advantages", "hicra_advantages", "kl_penalty",
    "longer_than_group_mean", "loss_denominator", "overlong_shaping", "policy_loss",
    "soft_overlong_penalty",
]
