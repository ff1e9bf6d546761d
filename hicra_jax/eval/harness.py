"""The evaluation harness: sample k completions per problem, grade them, compute avg@k / pass@k.

The sampler is a parameter: `evaluate` takes any `SampleFn`
`(problems, n, seed) -> Samples`, so it runs the same with the real policy
(`model_sampler(model, tokenizer, ...)`, built on `hicra_jax.sampling.generate`)
and with a fake that returns known completions (tests).

Protocol (the paper's, all configurable): the chat template with the
instruction to reason step by step and put the answer in \\boxed{};
temperature 0.6; avg@k with k = 32 for AIME24/25, 4 for AMC23 and 1 otherwise;
strict \\boxed{} matching ("math_strict"); unbiased pass@k. Temperature 0 means
greedy decoding.

Problems with images (benchmarks in MathVista's layout, eval/benchmarks.py)
reach the sampler as {"problem", "images", "where"} mappings (`sampler_input`);
`ModelSampler(..., processor=...)` builds their prompts with image tokens and
prefills them with their images.

Seeds: batch b of benchmark `name` is sampled with seed
`crc32(f"{seed}:{name}:{b}")`, so a benchmark's samples do not depend on which
other benchmarks run; they do depend on `rows_per_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hicra_jax.data import images as images_lib
from hicra_jax.data.prompts import DEFAULT_INSTRUCTION, encode_prompts
from hicra_jax.eval.benchmarks import Benchmark
from hicra_jax.eval.metrics import accuracy_metrics
from hicra_jax.eval.report import BenchmarkResult, EvalReport, sample_record
from hicra_jax.models import VisionInputs
from hicra_jax.rewards import NO_ANSWER, GraderPool, get_reward, grade_batch, rewards_array
from hicra_jax.sampling import SamplingParams, generate_arrays

logger = logging.getLogger("hicra_jax.eval")

PAPER_TEMPERATURE = 0.6


@dataclasses.dataclass(frozen=True)
class Samples:
  """n completions for each of P problems; row i belongs to problem i // n.

  Attributes:
    texts: P * n completion texts (stop token excluded).
    lengths: P * n completion lengths in tokens.
    finish_reasons: P * n of "stop" / "length".
  """

  texts: Sequence[str]
  lengths: Sequence[int]
  finish_reasons: Sequence[str]


# (problems, n, seed) -> Samples. A problem is its text, or for a problem with images a
# mapping {"problem": text, "images": [paths][, "where": how messages name it]}.
SampleFn = Callable[[Sequence[Any], int, int], Samples]


def sampler_input(example: Mapping[str, Any]) -> Any:
  """What `evaluate` passes a `SampleFn` for a benchmark example (see SampleFn)."""
  if not example.get("images"):
    return example["problem"]
  return {"problem": example["problem"], "images": list(example["images"]),
          "where": f"example {example['id']} ({example.get('where', '')})"}


def vision_rows(model_config, pixels: Sequence[images_lib.PixelInputs | None]) -> VisionInputs:
  """The `VisionInputs` of rows with these images (None: a row without images)."""
  return VisionInputs.from_rows(model_config, [
      None if p is None else (p.pixel_values, p.image_grid_thw) for p in pixels])


class ModelSampler:
  """A `SampleFn` for a real policy: render prompts, `generate`, decode.

  Args:
    model: the policy (`hicra_jax.models.load_pretrained`).
    tokenizer: its tokenizer (`hicra_jax.models.load_tokenizer`).
    temperature: sampling temperature; 0 means greedy decoding.
    top_p, top_k, min_p: truncation of the sampling distribution.
    max_new_tokens: completion length limit.
    template, instruction, system, chat_template_kwargs: prompt rendering (see
      `hicra_jax.data.encode_prompts`); the default instruction asks for step
      by step reasoning and a \\boxed{} answer.
    generate_fn: replaces `generate_all_rows` (`hicra_jax.sampling.generate`'s signature).
    mesh: passed to `generate_fn`.
    processor: the image processor of a vision-language model
      (`hicra_jax.data.images.image_processor`), for problems with images.

  Attributes:
    settings: the sampling and prompting settings, recorded in reports.
  """

  def __init__(self, model, tokenizer, *, temperature: float = PAPER_TEMPERATURE,
               top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
               max_new_tokens: int = 4096, template: str = "auto",
               instruction: str | None = None, system: str | None = None,
               chat_template_kwargs: Mapping[str, Any] | None = None,
               generate_fn: Callable[..., Any] | None = None, mesh=None, processor=None):
    if not temperature >= 0:
      raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    self.model = model
    self.tokenizer = tokenizer
    self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    self.system = system or None
    self.template = template
    self.chat_template_kwargs = dict(chat_template_kwargs or {})
    self.mesh = mesh
    self.processor = processor
    self._generate = generate_fn
    self.params_kwargs = dict(
        max_new_tokens=int(max_new_tokens), temperature=float(temperature) or 1.0,
        greedy=temperature == 0, top_p=float(top_p), top_k=int(top_k), min_p=float(min_p))
    self.settings = {
        "temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k),
        "min_p": float(min_p), "max_new_tokens": int(max_new_tokens), "template": template,
        "instruction": self.instruction, "system": system or "",
    }
    if self.chat_template_kwargs:
      self.settings["chat_template_kwargs"] = dict(self.chat_template_kwargs)

  def __call__(self, problems: Sequence[Any], n: int, seed: int) -> Samples:
    encode = dict(system=self.system, instruction=self.instruction or None,
                  template=self.template, chat_template_kwargs=self.chat_template_kwargs or None)
    options = {}
    if all(isinstance(p, str) for p in problems):
      prompts = encode_prompts(self.tokenizer, list(problems), **encode)
    else:
      prompts, options["vision"] = self._image_prompts(problems, encode)
    params = SamplingParams.for_tokenizer(self.tokenizer, n=n, **self.params_kwargs)
    generate_fn = self._generate or generate_all_rows
    rollout = generate_fn(self.model, prompts, params, jax.random.key(seed), mesh=self.mesh,
                          **options)
    expected = np.repeat(np.arange(len(prompts)), n)
    if not np.array_equal(np.asarray(rollout.prompt_index), expected):
      raise ValueError("the sampler returned rows out of the documented order (row i must "
                       f"belong to prompt i // n); prompt_index = {rollout.prompt_index}")
    return Samples(texts=list(rollout.texts(self.tokenizer)),
                   lengths=[int(x) for x in rollout.lengths],
                   finish_reasons=[str(x) for x in rollout.finish_reason])

  def _image_prompts(self, problems: Sequence[Any], encode: Mapping[str, Any]):
    """(prompt ids, VisionInputs) of problems some of which have images (see SampleFn)."""
    items = [{"problem": p, "images": []} if isinstance(p, str)
             else {"where": f"problem {k}", **p} for k, p in enumerate(problems)]
    for i in items:
      i["images"] = [i["images"]] if isinstance(i["images"], str) else list(i["images"])
    if self.processor is None:
      where = next(i["where"] for i in items if i["images"])
      raise ValueError(f"{where}: the problem has images but the sampler has no image "
                       "processor (ModelSampler(..., processor=hicra_jax.data.images."
                       "image_processor(model_dir)))")
    encoded = images_lib.encode_image_prompts(
        self.tokenizer, self.processor, [i["problem"] for i in items],
        [i["images"] for i in items], [i.get("where", "") for i in items], **encode)
    pixels = [images_lib.pixel_inputs(i["images"], self.processor, i.get("where", ""),
                                      expected_grid=grid)
              if i["images"] else None for i, (_, grid) in zip(items, encoded)]
    return [ids for ids, _ in encoded], vision_rows(self.model.config, pixels)


def generate_all_rows(model, prompts, params: SamplingParams, rng, **options):
  """`generate`, with every row on every process (with several processes each one
  grades all rows; one process: the same as `generate`)."""
  return generate_arrays(model, prompts, params, rng, **options).to_host(params.n, all_rows=True)


def model_sampler(model, tokenizer, **kwargs) -> ModelSampler:
  """`ModelSampler(model, tokenizer, **kwargs)`: the real policy as a `SampleFn`."""
  return ModelSampler(model, tokenizer, **kwargs)


def batch_seed(seed: int, benchmark: str, batch: int) -> int:
  """The sampling seed of one batch (31 bits): crc32 of "seed:benchmark:batch"."""
  return zlib.crc32(f"{seed}:{benchmark}:{batch}".encode()) & 0x7FFFFFFF


def evaluate(benchmarks: Sequence[Benchmark], sample: SampleFn, *, label: str = "model",
             k: int | None = None, reward: str = "math_strict", seed: int = 0,
             rows_per_batch: int = 64, grading_timeout_s: float | None = None,
             pool: GraderPool | None = None,
             log: Callable[[str], None] | None = None) -> EvalReport:
  """Evaluates a sampler on benchmarks: avg@k, pass@k and per-sample records.

  Args:
    benchmarks: loaded benchmarks (`load_benchmark`).
    sample: `(problems, n, seed) -> Samples` with P * n rows in problem order.
    label: the report's row name.
    k: samples per problem for every benchmark; None uses each benchmark's
      protocol k (32 for AIME24/25, 4 for AMC23, 1 otherwise).
    reward: a registered reward name (`hicra_jax.rewards.REWARDS`).
    seed: base seed (see the module docstring).
    rows_per_batch: completions per sampler call; a call gets
      max(1, rows_per_batch // k) problems.
    grading_timeout_s: per-item limit of sandboxed grading checks.
    pool: the grading pool (default: the process-wide one).
    log: called with one progress line per sampler call and benchmark.

  Returns:
    The `EvalReport` (deterministic for a deterministic sampler).

  Raises:
    ValueError: bad arguments, or a sampler that returns the wrong number of rows.
  """
  get_reward(reward)
  if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
    raise ValueError(f"k must be None (protocol defaults) or an int >= 1, got {k!r}")
  if isinstance(rows_per_batch, bool) or not isinstance(rows_per_batch, int) or rows_per_batch < 1:
    raise ValueError(f"rows_per_batch must be an int >= 1, got {rows_per_batch!r}")
  log = log or (lambda line: logger.info("%s", line))
  results, records = [], []
  ks = {}
  for bench in benchmarks:
    n = k or bench.k
    ks[bench.name] = n
    examples = list(bench.examples)
    per_call = max(1, rows_per_batch // n)
    texts, lengths, finishes = [], [], []
    for b, start in enumerate(range(0, len(examples), per_call)):
      batch = examples[start:start + per_call]
      t0 = time.perf_counter()
      out = sample([sampler_input(e) for e in batch], n, batch_seed(seed, bench.name, b))
      rows = len(batch) * n
      if not len(out.texts) == len(out.lengths) == len(out.finish_reasons) == rows:
        raise ValueError(f"the sampler returned {len(out.texts)} texts, {len(out.lengths)} "
                         f"lengths and {len(out.finish_reasons)} finish reasons for "
                         f"{len(batch)} problems x n={n}; expected {rows} of each")
      texts += list(out.texts)
      lengths += [int(x) for x in out.lengths]
      finishes += [str(x) for x in out.finish_reasons]
      log(f"{bench.name}: problems {start + 1}-{start + len(batch)} of {len(examples)}, "
          f"{rows} samples in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    grades = grade_batch(reward, texts, examples, group_size=n, timeout_s=grading_timeout_s,
                         pool=pool)
    rewards_PxG = rewards_array(grades).reshape(len(examples), n)
    metrics = accuracy_metrics(rewards_PxG)
    statuses: dict[str, int] = {}
    for g in grades:
      statuses[g.status] = statuses.get(g.status, 0) + 1
    results.append(BenchmarkResult(
        name=bench.name, display=bench.display, source=bench.source, k=n,
        num_problems=len(examples), avg_at_k=metrics["avg_at_k"],
        pass_at_k=metrics["pass_at_k"], num_correct=metrics["num_correct"],
        mean_length=float(np.mean(lengths)),
        truncated_rate=float(np.mean([f == "length" for f in finishes])),
        no_answer_rate=statuses.get(NO_ANSWER, 0) / len(grades),
        status_counts=dict(sorted(statuses.items()))))
    for i, (text, grade) in enumerate(zip(texts, grades)):
      records.append(sample_record(bench.name, examples[i // n], i % n, text, grade,
                                   lengths[i], finishes[i]))
    log(f"{bench.name}: graded {len(grades)} samples in {time.perf_counter() - t0:.1f}s; "
        f"avg@{n} = {100 * metrics['avg_at_k']:.1f}%")
  protocol = dict(getattr(sample, "settings", {}))
  protocol.update(reward=reward, seed=seed, k=ks, rows_per_batch=rows_per_batch)
  return EvalReport(label=label, protocol=protocol, results=tuple(results),
                    samples=tuple(records))


def evaluate_model(model, tokenizer, benchmarks: Sequence[Benchmark], *, label: str = "model",
                   k: int | None = None, reward: str = "math_strict", seed: int = 0,
                   rows_per_batch: int = 64, grading_timeout_s: float | None = None,
                   pool: GraderPool | None = None, log: Callable[[str], None] | None = None,
                   **sampler_kwargs) -> EvalReport:
  """`evaluate` with `model_sampler(model, tokenizer, **sampler_kwargs)`."""
  return evaluate(benchmarks, model_sampler(model, tokenizer, **sampler_kwargs), label=label,
                  k=k, reward=reward, seed=seed, rows_per_batch=rows_per_batch,
                  grading_timeout_s=grading_timeout_s, pool=pool, log=log)
