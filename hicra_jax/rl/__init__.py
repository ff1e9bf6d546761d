"""RL core: GRPO/HICRA advantages, clipped policy loss, KL and entropy terms, DAPO filters.

Pure, jittable functions on arrays (string options and group sizes static);
see DESIGN.md for the row layout (row i belongs to prompt i // G).
"""

from hicra_jax.rl.advantages import (AMPLIFY, ESTIMATORS, GATES, SCALES, fork_token_mask,
                                     grpo_advantages, hicra_advantages, longer_than_group_mean)

__all__ = [
    "AMPLIFY", "ESTIMATORS", "GATES", "SCALES", "fork_token_mask", "grpo_advantages",
    "hicra_advantages", "longer_than_group_mean",
]
