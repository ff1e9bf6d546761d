"""Rewards: answer extraction, math grading (math-verify, sandboxed), reward registry.

Pure planning (extraction, normalization, exact comparison) runs in the caller;
symbolic checks run in worker processes with hard per-item time limits (see
`pool.py`). Importing this package does not import JAX, sympy or math-verify.
"""

from hicra_jax.rewards.extract import (MAX_ANSWER_CHARS, extract_boxed, extract_gsm8k_answer,
                                       extract_tagged)
from hicra_jax.rewards.grades import (CORRECT, DEFAULT_TIMEOUT_S, ERROR, INCORRECT, NO_ANSWER,
                                      PARTIAL, STATUSES, TIMEOUT, Check, Grade)
from hicra_jax.rewards.grading import MODES, compare_answer, grade_math, math_reward, plan_math
from hicra_jax.rewards.normalize import (PlainNumber, normalize_answer, numbers_equal,
                                         parse_plain_number, quick_equal)
from hicra_jax.rewards.pool import (GraderPool, configure_default_pool, default_pool, resolve,
                                    resolve_many)
from hicra_jax.rewards.registry import (REWARDS, Reward, get_reward, grade_batch,
                                        register_reward, rewards_array)

__all__ = [
    "CORRECT", "Check", "DEFAULT_TIMEOUT_S", "ERROR", "Grade", "GraderPool", "INCORRECT",
    "MAX_ANSWER_CHARS", "MODES", "NO_ANSWER", "PARTIAL", "PlainNumber", "REWARDS", "Reward",
    "STATUSES", "TIMEOUT", "compare_answer", "configure_default_pool", "default_pool",
    "extract_boxed", "extract_gsm8k_answer", "extract_tagged", "get_reward", "grade_batch",
    "grade_math", "math_reward", "normalize_answer", "numbers_equal", "parse_plain_number",
    "plan_math", "quick_equal", "register_reward", "resolve", "resolve_many", "rewards_array",
]
