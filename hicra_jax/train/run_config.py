"""The `train` run config: every field with its default, the schema presets build on.

An ml-collections ConfigDict (`hicra-jax train --config.FIELD=value` overrides
any field); `hicra_jax.commands.train.validate` checks it before anything runs.
Light on purpose (no jax): config files import it.
"""

from __future__ import annotations

from hicra_jax import config as config_lib

# Fields of earlier versions that runs saved in their checkpoints; dropped when
# such a run's config is read back (`hicra-jax convert`, eval of a workdir).
RETIRED_FIELDS = ("debug_sleep_in_step_s",)  # a test knob, now TEST_STEP_SLEEP_ENV


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `train` (a tiny synthetic run; presets override it)."""
  c = config_lib.ConfigDict()
  c.algorithm = "hicra"  # "hicra" | "grpo" (clip-higher) | "entropy_reg"
  c.seed = 0  # PRNG seed of sampling, data order and random init
  c.num_steps = 20  # RL steps (one rollout batch and its update each)
  c.workdir = "runs/train"  # checkpoints, metrics, samples and the exported policy
  c.resume = False  # continue from the latest checkpoint in workdir
  c.export_policy = True  # write workdir/policy (HF safetensors) at the end

  c.model = config_lib.ConfigDict()
  c.model.path = "random"  # "smollm2" | "random" | a .gguf file | an HF model directory
  c.model.tokenizer = ""  # "": the model's own (unused for "random")
  c.model.dtype = "float32"  # params (master weights)
  c.model.compute_dtype = ""  # "": same as dtype
  c.model.remat = "none"  # per-layer rematerialization: "none" | "full" | "dots" | "dots_no_batch"
  # Device mesh (hicra_jax.sharding): all 1 = one device, no mesh; -1 = the rest.
  c.model.mesh = config_lib.ConfigDict(dict(data=1, fsdp=1, tensor=1))
  # Shape of the "random" model (tests, smoke runs).
  c.model.random = config_lib.ConfigDict(dict(
      vocab_size=16, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
      num_kv_heads=1, head_dim=16))

  c.data = config_lib.ConfigDict()
  c.data.source = "synthetic"  # "synthetic" | "jsonl" | "parquet" | "hf" | "reasoning_gym"
  c.data.path = ""  # jsonl / parquet: file path
  c.data.name = ""  # hf: "dataset[:config]" (Hugging Face Hub name, or cached offline)
  c.data.split = "train"  # hf: split
  c.data.question_field = "question"  # jsonl/parquet/hf: the problem's field ("problem" for MATH)
  c.data.answer_field = "answer"  # jsonl/parquet/hf: the reference answer's field
  c.data.task = ""  # reasoning_gym: dataset name, e.g. "chain_sum"
  c.data.task_kwargs = "{}"  # reasoning_gym: JSON object of generator options
  c.data.size = 64  # reasoning_gym / synthetic: examples generated
  c.data.eval_size = 0  # held-out examples (taken before training examples)
  c.data.template = "auto"  # prompt template: "auto" | "chat" | "plain"
  c.data.prompt_len = 4  # synthetic: prompt tokens

  c.reward = config_lib.ConfigDict()
  c.reward.name = "synthetic_target"  # a hicra_jax.rewards registry name or "synthetic_target"
  c.reward.timeout_s = 5.0  # per-item limit of sandboxed checks
  c.reward.target_token = 5  # synthetic_target: the rewarded token

  c.planning = config_lib.ConfigDict()
  c.planning.grams = "synthetic"  # "paper" | an SG file | "synthetic" (token n-gram) | "none"
  c.planning.synthetic_pattern = (5, 5)  # "synthetic": the token n-gram that counts as planning
  c.planning.alpha = 0.2  # HICRA's amplification (paper: 0.2)

  c.rollout = config_lib.ConfigDict()
  c.rollout.prompts_per_step = 8  # prompts per RL step
  c.rollout.group_size = 8  # samples per prompt (the GRPO group)
  c.rollout.temperature = 1.0  # sampling temperature of the rollouts
  c.rollout.top_p = 1.0  # nucleus sampling (1: off)
  c.rollout.top_k = 0  # top-k sampling (0: off)
  # Curriculum stages: the next value is used when the truncation rate exceeds
  # truncation_threshold (paper: 16K -> 32K at 20%).
  c.rollout.max_new_tokens = (8,)
  c.rollout.truncation_threshold = 0.2  # truncated fraction that moves to the next stage
  c.rollout.prompt_buckets = (4, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # padded prompt lengths
  c.rollout.old_logprobs = "policy"  # "policy" (recomputed) | "sampler"
  # Decode in segments of this many tokens and check for SIGTERM between them,
  # so a preemption does not wait for a whole long rollout (results unchanged).
  c.rollout.signal_check_tokens = 256

  c.filter = config_lib.ConfigDict()
  c.filter.dynamic = False  # DAPO dynamic filtering with refill
  c.filter.max_rounds = 4  # rollout rounds per step when refilling

  c.optim = config_lib.ConfigDict()
  c.optim.lr = 1e-2  # peak learning rate (AdamW)
  c.optim.warmup_steps = 0  # linear warmup over this many optimizer updates
  c.optim.schedule = "constant"  # "constant" | "cosine"
  c.optim.final_lr_fraction = 0.0  # cosine: the final learning rate / lr
  c.optim.weight_decay = 0.0  # AdamW decoupled weight decay
  c.optim.b1 = 0.9  # AdamW first-moment decay
  c.optim.b2 = 0.999  # AdamW second-moment decay
  c.optim.eps = 1e-8  # AdamW epsilon
  c.optim.max_grad_norm = 1.0  # global-norm gradient clipping (0: off)

  c.loss = config_lib.ConfigDict()
  c.loss.clip_low = 0.2  # PPO ratio clip below: 1 - clip_low
  c.loss.clip_high = 0.28  # clip-higher (DAPO): ratio clip above at 1 + clip_high
  c.loss.aggregation = "token-mean"  # how token losses average (hicra_jax.options.AGGREGATIONS)
  c.loss.estimator = "grpo"  # group baseline: "grpo" (group mean) | "rloo" (leave-one-out)
  c.loss.scale = "none"  # advantage scaling: "none" | "group_std" | "batch_std"
  c.loss.entropy_coef = 0.001  # used by algorithm "entropy_reg" only
  c.loss.kl_coef = 0.0  # > 0 loads a frozen reference copy of the initial policy
  c.loss.kl_estimator = "k3"  # KL estimator of the reference term: "k1" | "k2" | "k3"
  c.loss.epochs = 1  # optimizer steps over each rollout batch
  c.loss.micro_batch_size = 32  # rows per micro-batch (divides prompts x group)

  c.guard = config_lib.ConfigDict()
  c.guard.max_consecutive_skips = 3  # non-finite updates in a row before saving and stopping

  c.eval = config_lib.ConfigDict()
  c.eval.every = 0  # steps (0: never)
  c.eval.temperature = 0.6  # sampling temperature of the evaluation (paper: 0.6)
  c.eval.samples = 1  # completions per held-out prompt (accuracy = mean over all of them)

  c.checkpoint = config_lib.ConfigDict()
  c.checkpoint.every = 5  # steps between checkpoints (and at the last step)
  c.checkpoint.keep = 3  # most recent checkpoints kept
  c.checkpoint.keep_best = 1  # best checkpoints by eval accuracy also kept
  c.checkpoint.async_save = True  # write checkpoints in the background

  c.log = config_lib.ConfigDict()
  c.log.tensorboard = True  # also write TensorBoard event files
  c.log.samples_per_step = 2  # completions per step in samples.jsonl
  # Weights & Biases (optional, `pip install 'hicra-jax[wandb]'`): project "" = off.
  c.log.wandb = config_lib.ConfigDict(dict(project="", entity="", name="", mode="online"))
  return c
