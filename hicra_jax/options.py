"""Every option list of the library, defined once (a leaf module: no imports).

The library checks its arguments against these and the commands validate
config fields against the same tuples, so `hicra-jax train --help` and the
pure functions can never disagree. Importing this module is free (no jax),
which keeps config validation light.
"""

ALGORITHMS = ("hicra", "grpo", "entropy_reg")  # RL algorithms of the trainer
ESTIMATORS = ("grpo", "rloo")  # group baselines of the advantage
SCALES = ("none", "group_std", "batch_std")  # advantage normalization
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")  # loss
KL_ESTIMATORS = ("k1", "k2", "k3")
SCHEDULES = ("constant", "cosine")  # learning-rate schedule after warmup
DTYPES = ("float32", "bfloat16")  # parameter and compute dtypes
REMATS = ("none", "full", "dots", "dots_no_batch")  # per-layer rematerialization policies
# Attention kernels ("auto": cudnn on GPU, splash on TPU, xla elsewhere; chunked: any backend).
ATTENTIONS = ("auto", "xla", "cudnn", "splash", "chunked")
TEMPLATES = ("auto", "chat", "plain")  # prompt rendering ("auto": chat when the model has one)
MODEL_ALIASES = ("smollm2",)  # packaged models a model path may name (models/paths.py)
SG_ALIASES = ("paper", "synthetic", "none")  # Strategic Gram sets that name no file
OLD_LOGPROBS = ("policy", "sampler")  # where the update's old log-probs come from
DATA_SOURCES = ("jsonl", "parquet", "hf", "reasoning_gym")  # text datasets
CLUSTERINGS = ("agglomerative", "kmeans")  # Strategic Gram extraction
WANDB_MODES = ("online", "offline", "disabled")
