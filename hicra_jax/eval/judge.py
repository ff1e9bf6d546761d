"""Error-type analysis of failed rollouts with an LLM judge (the paper's Fig. 4).

Each failed rollout (reward < 1) is shown to a judge model with a
multiple-choice question: the problem, the end of the failed response and the
paper's four causes (`LABELS`):

  (A) unrelated or degenerate output
  (B) low-level execution error (a calculation or a fact)
  (C) flawed high-level plan or strategy
  (D) other

The judge's answer is parsed into one letter (`parse_choice`; an unclear
answer counts as "unparsed"), and the letters are counted per training step
(or per evaluated model), with the paper's grouping "Planning & Strategy" (C)
vs "Others" (A + B + D) as fractions of the parsed answers (`summarize`).

Inputs (`read_records`), the format detected per record (`detect_format`):

  * "train": a run's rollout dumps (`<workdir>/rollouts/step_000012.jsonl.gz`,
    gzip JSONL) or its `samples.jsonl`: "step", "example_id", "prompt" (text),
    "completion" (text), "reward", "planning_spans". Grouped by step.
  * "eval": the `samples.jsonl` of `hicra-jax eval` (`hicra_jax.eval.report`):
    "benchmark", "problem_id", "sample_index", "completion", "gold", "reward",
    ... but no problem text: it is looked up in the benchmark files named by
    the `summary.json` next to it, where they are local files. Grouped by a
    record's "label"/"model"/"checkpoint" when it has one, else by the label
    of that `summary.json`, else by the folder name.

The judge is a parameter: `judge_rollouts(records, ask)` takes any batched
`ask(prompts) -> completions`, so the same code runs with a real model through
the sampler (`hicra-jax judge`) and with a fake (tests). Everything here is
pure apart from reading the inputs and `write_outputs`; nothing imports jax.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from hicra_jax.data.prompts import DEFAULT_INSTRUCTION, PLAIN_ANSWER, PLAIN_QUESTION
from hicra_jax.eval.benchmarks import load_benchmark

LABELS: dict[str, str] = {
    "A": "Unrelated or degenerate output: the response does not address the problem, "
         "repeats itself or is gibberish.",
    "B": "Low-level execution error: the approach is sound, but a calculation, an algebra "
         "step or a fact is wrong.",
    "C": "Flawed high-level plan or strategy: the overall approach, the decomposition of "
         "the problem or the reasoning strategy is wrong.",
    "D": "Other.",
}
CHOICES = tuple(LABELS)
PLANNING_STRATEGY = ("C",)  # the paper's "Planning & Strategy"
OTHERS = ("A", "B", "D")  # the paper's "Others"
UNPARSED = "unparsed"

JUDGE_FILE = "judge.jsonl"
SUMMARY_FILE = "judge_summary.json"
DUMP_SUFFIX = ".jsonl.gz"  # rollout dumps: <workdir>/rollouts/step_000012.jsonl.gz
SAMPLES_FILE = "samples.jsonl"  # a run's sample log, or an eval's per-sample file
EVAL_SUMMARY_FILE = "summary.json"  # written next to an eval's samples.jsonl
ROLLOUTS_DIR = "rollouts"

TRAIN, TRAIN_IDS, EVAL = "train", "train_ids", "eval"
_EVAL_GROUP_KEYS = ("label", "model", "checkpoint")


class InputFormatError(ValueError):
  """An input file or record that cannot be judged; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One rollout, in the same shape whatever file it came from.

  Attributes:
    group: what results are counted by: the step ("12") or the model/checkpoint label.
    step: the training step (None for an eval sample without one).
    example_id: the problem's id (None when the input has none).
    sample_index: the sample's index within its problem (eval samples), else None.
    problem: the problem text (may be a placeholder when the input lacks it).
    response: the completion text.
    reward: its reward; a rollout failed when reward < 1.
    reference: the gold answer when the input has one (eval samples), else None.
    source: "file:line" it was read from.
  """

  group: str
  step: int | None
  example_id: str | None
  sample_index: int | None
  problem: str
  response: str
  reward: float
  reference: str | None = None
  source: str = ""

  @property
  def failed(self) -> bool:
    """Whether the rollout failed (reward < 1)."""
    return self.reward < 1


@dataclasses.dataclass(frozen=True)
class Judgement:
  """The judge's verdict on one failed rollout: its parsed letter (None: unparsed) and raw text."""

  record: Record
  choice: str | None
  text: str

  def to_json(self) -> dict[str, Any]:
    """One line of judge.jsonl."""
    r = self.record
    line = {"group": r.group, "step": r.step, "example_id": r.example_id}
    if r.sample_index is not None:
      line["sample_index"] = r.sample_index
    line.update(reward=r.reward, choice=self.choice, judge_text=self.text, source=r.source)
    return line


# ------------------------------------------------------------------ parsing the answer

_LETTER = re.compile(r"([\(\[])?([A-Da-d])([\)\]])?")
# The article "A" ("A calculation error ..."), not an option ("A or B" is one).
_ARTICLE = re.compile(r"A\s+(?!(?:or|and|nor)\b)[a-z]")
# Another option offered right after a letter: "A or B", "A/B", "(A), (B)", "A C".
_ALTERNATIVE = re.compile(r"\s*(?:,|/|&|\bor\b|\band\b)\s*[\(\[]?[A-Da-d](?![A-Za-z])"
                          r"|\s+[\(\[]?[A-D][\)\]]?(?=\s*(?:$|[,.;]))")
# "answer is (B)", "Answer: C", "option C", "choice: (d)", "answer would be option B".
_MARKER = re.compile(
    r"\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*[:=\-]?\s*"
    r"(?:option\s+|choice\s+)?(?=[\(\[]?[A-Da-d](?![A-Za-z]))", re.I)
# An option list at line starts ("(A) ...\n(B) ..."): the options echoed, not an answer.
_LISTED = re.compile(r"^\s*[\(\[]?([A-D])[\)\].:]", re.M)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-D])(?![A-Za-z0-9'])")


def _letter_at(text: str, pos: int) -> tuple[str, int] | None:
  """The option letter at `pos` ("C", "(C)", "C)", "[c]") and where it ends, if it is one.

  A lowercase letter counts only in brackets, alone, or before "." or ":"
  ("c", "c. ..."); an unbracketed "A" before a lowercase word is the article.
  """
  m = _LETTER.match(text, pos)
  if m is None:
    return None
  opened, letter, closed = m.groups()
  rest = text[m.end():]
  if rest[:1].isalnum() or rest[:1] == "'":  # "Apple", "A's"
    return None
  bracketed = bool(opened or closed)
  if letter.islower() and not bracketed and not re.match(r"[.:]|\s*$", rest):
    return None
  if not bracketed and _ARTICLE.match(text, pos):
    return None
  return letter.upper(), m.end()


def _normalize(text: str) -> str:
  """The answer without markdown emphasis and code marks, trimmed."""
  return re.sub(r"\*\*|__|`", "", text).strip()


def parse_choice(text: str | None) -> str | None:
  """The option letter ("A".."D") a judge's answer gives, or None when it is unclear.

  Accepted: "C", "(C)", "**C**", "c", "Answer: C", "The answer is (B).",
  "C) flawed ...", "B. The response ...", a letter followed by an explanation,
  one bracketed or standalone letter inside a sentence ("I choose (C)").
  None: empty text, no option letter ("none"), alternatives ("A or B", "A, B"),
  different letters given as the answer, or the option list echoed.

  Rules, in order: explicit markers ("answer is", "answer:", "option",
  "choice") decide when present (all must agree); an echoed option list
  (two or more letters at line starts) is unclear; else a letter at the
  start; else the single distinct letter standing alone in the text.
  """
  if not isinstance(text, str):
    return None
  t = _normalize(text)
  if not t:
    return None
  marked = set()
  for m in _MARKER.finditer(t):
    found = _letter_at(t, m.end())
    if found is None:
      continue
    letter, end = found
    if _ALTERNATIVE.match(t, end):
      return None
    marked.add(letter)
  if marked:
    return marked.pop() if len(marked) == 1 else None
  if len(set(_LISTED.findall(t))) > 1:
    return None
  found = _letter_at(t, 0)
  if found is not None:
    letter, end = found
    return None if _ALTERNATIVE.match(t, end) else letter
  letters = {m.group(1) for m in _STANDALONE.finditer(t) if not _ARTICLE.match(t, m.start())}
  letters |= {m.group(1).upper() for m in re.finditer(r"[\(\[]([A-Da-d])[\)\]]", t)}
  return letters.pop() if len(letters) == 1 else None


# ------------------------------------------------------------------ the prompt

# Chat-template markers and the user turn of rendered prompts (ChatML: Qwen,
# SmolLM2; Llama 3), as decoded with their special tokens.
_SPECIAL_MARKER = re.compile(r"<\|[^<>|\s]{1,40}\|>")
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\s*?\n(.*?)(?:<\|im_end\|>|\Z)", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|\Z)", re.S),
)
_PLAIN = re.compile(re.escape(PLAIN_QUESTION) + r"(.*?)\s*" + re.escape(PLAIN_ANSWER) + r"\s*\Z",
                    re.S)


def clean_text(text: str, special_tokens: Iterable[str] = ()) -> str:
  """`text` without chat-template markers (`<|im_end|>`, ...) and the given special tokens.

  A judge's tokenizer would read such markers in its prompt as control tokens.
  """
  for token in special_tokens:
    if token:
      text = text.replace(token, "")
  return _SPECIAL_MARKER.sub("", text).strip()


def problem_text(prompt: str) -> str:
  """The problem in a rendered policy prompt: its last user turn, without the instruction.

  A chat-rendered prompt (ChatML or Llama 3) gives its last user turn, a plain
  one ("Question: ... Answer:") its question; other text is kept whole. The
  default step-by-step instruction appended to the problem is dropped.
  """
  text = prompt
  for pattern in _USER_TURNS:
    turns = pattern.findall(prompt)
    if turns:
      text = turns[-1]
      break
  else:
    m = _PLAIN.search(prompt)
    if m is not None:
      text = m.group(1)
  text = text.strip()
  if text.endswith(DEFAULT_INSTRUCTION):
    text = text[:-len(DEFAULT_INSTRUCTION)]
  return text.strip()


def truncate_response(response: str, max_chars: int) -> str:
  """The last `max_chars` characters of a response, marked with "..." when cut (0: whole)."""
  if max_chars <= 0 or len(response) <= max_chars:
    return response
  return "..." + response[-max_chars:]


def build_prompt(problem: str, response: str, *, max_response_chars: int = 4000,
                 reference: str | None = None) -> str:
  """The multiple-choice question the judge answers with one letter.

  Args:
    problem: the problem text.
    response: the failed response (already cleaned of special tokens).
    max_response_chars: only the response's last characters are shown (0: all).
    reference: the gold answer, shown when known.
  """
  shown = truncate_response(response, max_response_chars)
  cut = " (its last part)" if shown is not response else ""
  lines = ["The following response to a math problem is wrong. Identify the main cause "
           "of the failure.", "", "Problem:", problem.strip(), ""]
  if reference:
    lines += [f"Correct final answer: {reference}", ""]
  lines += [f"Wrong response{cut}:", shown.strip(), "",
            "What is the main cause of the failure? Options:"]
  lines += [f"({letter}) {label}" for letter, label in LABELS.items()]
  lines += ["", "Answer with a single letter: A, B, C or D."]
  return "\n".join(lines)


# ------------------------------------------------------------------ reading inputs


def detect_format(obj: Any) -> str | None:
  """The format of one input record: "train", "train_ids", "eval", or None (unknown).

  "train": rollout dumps and a run's samples.jsonl (step, prompt, completion,
  reward); "train_ids": a samples.jsonl written without a tokenizer (token ids,
  no text); "eval": `hicra-jax eval`'s samples.jsonl (benchmark, problem_id,
  completion, reward).
  """
  if not isinstance(obj, Mapping):
    return None
  keys = set(obj)
  if {"benchmark", "problem_id", "completion", "reward"} <= keys:
    return EVAL
  if {"step", "prompt", "completion", "reward"} <= keys:
    return TRAIN
  if {"step", "completion_ids", "reward"} <= keys:
    return TRAIN_IDS
  return None


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
  value = obj[key]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise InputFormatError(f"{where}: {key!r} = {value!r}: expected a number")
  return float(value)


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
  value = obj[key]
  if not isinstance(value, str):
    raise InputFormatError(f"{where}: {key!r} = {value!r:.80}: expected a string")
  return value


def _optional_id(value: Any) -> str | None:
  return None if value is None else str(value)


def to_record(obj: Any, where: str, *, eval_label: str = "model",
              eval_problems: Mapping[tuple[str, str], str] | None = None) -> Record:
  """The `Record` of one parsed input line.

  Args:
    obj: the line's JSON value.
    where: "file:line", used in errors and kept in the record.
    eval_label: the group of an eval sample without its own label.
    eval_problems: {(benchmark, problem_id): problem text} for eval samples.

  Raises:
    InputFormatError: an unknown format, token ids without text, or a field of
      the wrong type (the message names `where`).
  """
  kind = detect_format(obj)
  if kind == TRAIN:
    step = obj["step"]
    if isinstance(step, bool) or not isinstance(step, int):
      raise InputFormatError(f"{where}: 'step' = {step!r}: expected an int")
    return Record(group=str(step), step=step, example_id=_optional_id(obj.get("example_id")),
                  sample_index=None, problem=problem_text(_text(obj, "prompt", where)),
                  response=_text(obj, "completion", where), reward=_number(obj, "reward", where),
                  source=where)
  if kind == EVAL:
    benchmark, problem_id = str(obj["benchmark"]), str(obj["problem_id"])
    problem = obj.get("problem")
    if not isinstance(problem, str):
      problem = (eval_problems or {}).get((benchmark, problem_id))
    if problem is None:
      problem = (f"(the problem text is not in the samples file: benchmark {benchmark}, "
                 f"problem {problem_id})")
    group = next((str(obj[k]) for k in _EVAL_GROUP_KEYS if obj.get(k) not in (None, "")),
                 eval_label)
    step = obj.get("step")
    index = obj.get("sample_index")
    return Record(group=group, step=step if isinstance(step, int) else None,
                  example_id=problem_id,
                  sample_index=index if isinstance(index, int) else None,
                  problem=problem, response=_text(obj, "completion", where),
                  reward=_number(obj, "reward", where),
                  reference=_optional_id(obj.get("gold")), source=where)
  if kind == TRAIN_IDS:
    raise InputFormatError(
        f"{where}: a sample with token ids (completion_ids) but no text: the run wrote its "
        "samples without a tokenizer, so there is nothing for a judge to read")
  keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
  raise InputFormatError(
      f"{where}: unknown record format (keys: {keys}); expected a rollout dump / run "
      "samples.jsonl record (step, prompt, completion, reward) or a `hicra-jax eval` "
      "samples.jsonl record (benchmark, problem_id, completion, reward)")


def input_files(path: str) -> list[str]:
  """The files an input path names, in reading order.

  A file is itself. A folder gives its rollout dumps (`*.jsonl.gz`, by name),
  else those of its `rollouts/` subfolder (a training workdir), else its
  `samples.jsonl` (a workdir without dumps, or an eval output folder).

  Raises:
    FileNotFoundError: the path does not exist, or a folder holds none of these.
  """
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} does not exist")
  for folder in (path, os.path.join(path, ROLLOUTS_DIR)):
    if os.path.isdir(folder):
      dumps = sorted(n for n in os.listdir(folder) if n.endswith(DUMP_SUFFIX))
      if dumps:
        return [os.path.join(folder, n) for n in dumps]
  samples = os.path.join(path, SAMPLES_FILE)
  if os.path.isfile(samples):
    return [samples]
  raise FileNotFoundError(
      f"{path!r} holds no rollout dumps (*{DUMP_SUFFIX}, also looked in {ROLLOUTS_DIR}/) "
      f"and no {SAMPLES_FILE}")


def default_output(path: str) -> str:
  """Where results go by default: next to the input.

  A file's folder; for a folder of dumps (`<workdir>/rollouts`) its parent (the
  workdir); for a workdir or an eval folder, itself.
  """
  path = os.path.normpath(path)
  if os.path.isfile(path):
    return os.path.dirname(path) or "."
  if any(n.endswith(DUMP_SUFFIX) for n in os.listdir(path)):
    return os.path.dirname(path) or "."
  return path


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """(line number, text) of a JSONL file, gzip when its name ends in .gz; blank lines skipped."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if line.strip():
          yield number, line
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise InputFormatError(f"{path}: cannot be read: {e}") from e


def eval_context(samples_path: str) -> tuple[str, dict[tuple[str, str], str]]:
  """(label, {(benchmark, problem_id): problem}) from the eval summary.json next to a samples file.

  The label is the summary's "label" (else the folder name); problems come
  from the benchmarks whose source is a local file that still exists (Hub
  sources and unreadable files are skipped: their samples get a placeholder).
  """
  folder = os.path.dirname(os.path.abspath(samples_path))
  label, problems = os.path.basename(folder) or "model", {}
  try:
    with open(os.path.join(folder, EVAL_SUMMARY_FILE), encoding="utf-8") as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return label, problems
  if not isinstance(summary, dict):
    return label, problems
  if isinstance(summary.get("label"), str) and summary["label"]:
    label = summary["label"]
  benchmarks = summary.get("benchmarks")
  for name, info in (benchmarks.items() if isinstance(benchmarks, dict) else ()):
    source = info.get("source") if isinstance(info, dict) else None
    if not isinstance(source, str) or not os.path.isfile(source):
      continue
    try:
      bench = load_benchmark(f"{name}={source}")
    except (OSError, ValueError):
      continue
    problems.update(((name, str(e["id"])), e["problem"]) for e in bench.examples)
  return label, problems


def read_file(path: str) -> list[Record]:
  """The records of one input file, the format detected per line.

  Raises:
    InputFormatError: bad JSON or an unknown format (naming the file and line).
  """
  records: list[Record] = []
  context = None
  for number, line in _lines(path):
    where = f"{path}:{number}"
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise InputFormatError(f"{where}: not valid JSON: {e}") from e
    if detect_format(obj) == EVAL and context is None:
      context = eval_context(path)
    label, problems = context or ("model", None)
    records.append(to_record(obj, where, eval_label=label, eval_problems=problems))
  return records


def read_records(path: str) -> list[Record]:
  """The records of every file `input_files(path)` names, in order."""
  return [r for f in input_files(path) for r in read_file(f)]


# ------------------------------------------------------------------ judging and counting


def order_groups(groups: Iterable[str]) -> list[str]:
  """The distinct groups: steps in numeric order, then other labels in order of appearance."""
  seen = list(dict.fromkeys(groups))
  steps = sorted((g for g in seen if re.fullmatch(r"-?\d+", g)), key=int)
  return steps + [g for g in seen if not re.fullmatch(r"-?\d+", g)]


def select_failed(records: Iterable[Record], max_per_step: int = 64) -> list[Record]:
  """The failed rollouts (reward < 1), at most the first `max_per_step` of each group (0: all)."""
  taken: dict[str, int] = {}
  out = []
  for r in records:
    if not r.failed:
      continue
    if max_per_step and taken.get(r.group, 0) >= max_per_step:
      continue
    taken[r.group] = taken.get(r.group, 0) + 1
    out.append(r)
  return out


def judge_rollouts(records: Sequence[Record], ask: Callable[[list[str]], list[str]], *,
                   max_per_step: int = 64, max_response_chars: int = 4000,
                   batch_size: int = 16, special_tokens: Iterable[str] = (),
                   log: Callable[[str], None] | None = None) -> list[Judgement]:
  """Asks the judge about each failed rollout and parses its answers.

  Args:
    records: rollouts (`read_records`); only failed ones (reward < 1) are
      judged, the first `max_per_step` of each group.
    ask: judge prompts -> one completion each, in order (batched: called with
      up to `batch_size` prompts).
    max_per_step: cap per group (0: no cap).
    max_response_chars: each response is shown by its last characters (0: all).
    batch_size: prompts per `ask` call.
    special_tokens: strings removed from problems and responses (the judge
      tokenizer's special tokens), besides `<|...|>` markers.
    log: called with one progress line per batch.

  Returns:
    One `Judgement` per judged rollout, in input order.

  Raises:
    ValueError: `ask` returned the wrong number of completions.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
  special = tuple(special_tokens)
  failed = select_failed(records, max_per_step)
  prompts = [build_prompt(clean_text(r.problem, special), clean_text(r.response, special),
                          max_response_chars=max_response_chars, reference=r.reference)
             for r in failed]
  texts: list[str] = []
  for start in range(0, len(prompts), batch_size):
    batch = prompts[start:start + batch_size]
    answers = list(ask(batch))
    if len(answers) != len(batch):
      raise ValueError(f"the judge returned {len(answers)} answers for {len(batch)} prompts")
    texts += [str(a) for a in answers]
    if log is not None:
      log(f"judged {len(texts)} of {len(prompts)} failed rollouts")
  return [Judgement(r, parse_choice(t), t) for r, t in zip(failed, texts)]


def count_choices(choices: Iterable[str | None]) -> dict[str, Any]:
  """Counts of A/B/C/D/unparsed with the Planning & Strategy vs Others fractions.

  The fractions are over parsed answers; None when there is none.
  """
  counts = {c: 0 for c in CHOICES}
  counts[UNPARSED] = 0
  for c in choices:
    counts[c if c in LABELS else UNPARSED] += 1
  parsed = sum(counts[c] for c in CHOICES)
  planning = sum(counts[c] for c in PLANNING_STRATEGY)
  others = sum(counts[c] for c in OTHERS)
  return {**counts,
          "planning_strategy_fraction": planning / parsed if parsed else None,
          "others_fraction": others / parsed if parsed else None}


def summarize(judgements: Sequence[Judgement], *, judge_model: str, input_path: str,
              groups: Sequence[str] = ()) -> dict[str, Any]:
  """The judge_summary.json content.

  Schema: {"per_step": {group: {"A", "B", "C", "D", "unparsed": int,
  "planning_strategy_fraction", "others_fraction": float | None}}, "labels":
  {letter: text}, "judge_model": str, "input": str}. `groups` lists groups to
  report even without judged rollouts (all zero, fractions None); groups are
  ordered by `order_groups`.
  """
  by_group: dict[str, list[str | None]] = {g: [] for g in groups}
  for j in judgements:
    by_group.setdefault(j.record.group, []).append(j.choice)
  return {"per_step": {g: count_choices(by_group[g]) for g in order_groups(by_group)},
          "labels": dict(LABELS), "judge_model": judge_model, "input": input_path}


def write_outputs(judgements: Sequence[Judgement], summary: Mapping[str, Any],
                  out_dir: str) -> dict[str, str]:
  """Writes judge.jsonl and judge_summary.json into `out_dir` (created if needed).

  Returns:
    {"judgements": path, "summary": path}.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {"judgements": os.path.join(out_dir, JUDGE_FILE),
           "summary": os.path.join(out_dir, SUMMARY_FILE)}
  with open(paths["judgements"], "w", encoding="utf-8") as f:
    for j in judgements:
      f.write(json.dumps(j.to_json(), ensure_ascii=False) + "\n")
  with open(paths["summary"], "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)
    f.write("\n")
  return paths


def format_summary(summary: Mapping[str, Any]) -> str:
  """A small text table of a summary: one row per step/model."""
  rows = ["group       A     B     C     D  unparsed  planning&strategy  others"]
  for group, c in summary["per_step"].items():
    rows.append(f"{group:<8} {c['A']:>4}  {c['B']:>4}  {c['C']:>4}  {c['D']:>4}  "
                f"{c[UNPARSED]:>8}  {_percent(c['planning_strategy_fraction']):>17}  "
                f"{_percent(c['others_fraction']):>6}")
  return "\n".join(rows)


def _percent(fraction: float | None) -> str:
  return "-" if fraction is None else f"{100 * fraction:.1f}%"
