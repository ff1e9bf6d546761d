"""`hicra-jax judge` (the paper's Fig. 4 error analysis): answer parsing, the judge prompt,
counting with a fake judge, input formats (rollout dumps, a run's samples.jsonl, an eval's
samples.jsonl), the command's errors and outputs, and the real SmolLM2-135M-Instruct as judge."""

from __future__ import annotations

import gzip
import json
import os
import types

import pytest

from hicra_jax import cli
from hicra_jax.commands import judge as judge_command
from hicra_jax.eval import judge
from hicra_jax.eval.report import BenchmarkResult, EvalReport, sample_record, write_report

CHATML_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"
                 "<|im_start|>user\n{problem}\nPlease reason step by step, and put your final "
                 "answer within \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n")
SUMMARY_KEYS = {"per_step", "labels", "judge_model", "input"}
STEP_KEYS = {"A", "B", "C", "D", "unparsed", "planning_strategy_fraction", "others_fraction"}

# ------------------------------------------------------------------ parse_choice


@pytest.mark.parametrize("text,expected", [
    ("C", "C"), ("(C)", "C"), ("[B]", "B"), ("c", "C"), ("(c)", "C"), ("c.", "C"), ("  D\n", "D"),
    ("Answer: C", "C"), ("answer: (d)", "D"), ("Answer:\nB", "B"), ("**C**", "C"),
    ("Answer: **A**", "A"), ("`B`", "B"), ("The answer is (B).", "B"), ("The answer is C", "C"),
    ("The correct option is C.", "C"), ("option (d)", "D"),
    ("C) flawed high-level plan or strategy", "C"), ("C - flawed plan", "C"),
    ("B. The response makes an arithmetic error in step 2.", "B"),
    ("B because 3 * 4 is not 11", "B"), ("B\n\nExplanation: it is not A.", "B"),
    ("A", "A"), ("A.", "A"), ("A) unrelated output", "A"),
    ("I choose (C) because the plan is wrong.", "C"), ("It's B.", "B"),
    ("The response has a calculation error, so B.", "B"),
    ("Answer: C\n(A) unrelated\n(B) execution", "C"),  # an explicit answer beats the echo
    # unclear: None
    ("", None), ("   ", None), ("none", None), ("None of the above", None),
    ("A or B", None), ("A, B", None), ("A/B", None), ("A and C", None), ("A C", None),
    ("Answer: A or C", None), ("Answer: A. Answer: B", None), ("It is either A or B", None),
    ("(A) Unrelated\n(B) Low-level\n(C) Flawed plan\n(D) Other", None),  # the options echoed
    ("A calculation error.", None),  # the article, not an option
    ("the answer is a low-level error", None), ("E", None), ("Answer: E", None),
])
def test_parse_choice(text, expected):
  assert judge.parse_choice(text) == expected


def test_parse_choice_of_a_non_string_is_none():
  assert judge.parse_choice(None) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------ the prompt


def test_prompt_has_the_problem_the_four_options_and_the_end_of_the_response():
  response = "BEGINNING " + "x" * 50 + " the final part ENDING"
  prompt = judge.build_prompt("What is 2 + 3?", response, max_response_chars=30,
                              reference="5")
  assert "What is 2 + 3?" in prompt
  for letter, label in judge.LABELS.items():
    assert f"({letter}) {label}" in prompt
  assert "unrelated" in judge.LABELS["A"].lower() and "degenerate" in judge.LABELS["A"].lower()
  assert "calculation" in judge.LABELS["B"] and "fact" in judge.LABELS["B"]
  assert "plan" in judge.LABELS["C"] and "strategy" in judge.LABELS["C"]
  assert judge.LABELS["D"] == "Other."
  assert "..." + response[-30:] in prompt and "ENDING" in prompt
  assert "BEGINNING" not in prompt
  assert "Correct final answer: 5" in prompt
  assert prompt.rstrip().endswith("Answer with a single letter: A, B, C or D.")
  whole = judge.build_prompt("p", response, max_response_chars=0)
  assert response in whole and "(its last part)" not in whole


def test_problem_text_and_cleaning_of_rendered_prompts():
  assert judge.problem_text(CHATML_PROMPT.format(problem="Evaluate $\\log_2 64$.")) == (
      "Evaluate $\\log_2 64$.")
  llama = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 1+1?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n")
  assert judge.problem_text(llama) == "What is 1+1?"
  assert judge.problem_text("Question: What is 1+1?\nPlease reason step by step, and put your "
                            "final answer within \\boxed{}.\nAnswer:") == "What is 1+1?"
  assert judge.problem_text("just a problem") == "just a problem"
  assert judge.clean_text("x = 2<|im_end|><|endoftext|>", ["</s>"]) == "x = 2"
  assert judge.clean_text("a</s>b", ["</s>"]) == "ab"


# ------------------------------------------------------------------ judging with a fake judge


def _record(step, example_id, reward, response="the response", group=None):
  return judge.Record(group=group or str(step), step=step, example_id=example_id,
                      sample_index=None, problem=f"problem {example_id}", response=response,
                      reward=reward, source="test")


class FakeJudge:
  """Answers by the problem id in the prompt; records each batch."""

  def __init__(self, answers):
    self.answers = answers
    self.batches = []

  def __call__(self, prompts):
    self.batches.append(list(prompts))
    return [next(a for key, a in self.answers.items() if f"problem {key}\n" in p)
            for p in prompts]


def test_judge_rollouts_counts_per_step_with_unparsed_answers():
  records = [
      _record(3, "a", 0.0), _record(3, "b", 1.0), _record(3, "c", 0.0), _record(3, "d", 0.0),
      _record(3, "e", 0.0), _record(1, "f", 0.5), _record(1, "g", 0.0), _record(7, "h", 1.0),
      _record(3, "i", 0.0),  # over max_per_step=4 for step 3
  ]
  fake = FakeJudge({"a": "C", "c": "The answer is (C).", "d": "B", "e": "A or B",
                    "f": "no idea", "g": "(D)", "i": "A"})
  judgements = judge.judge_rollouts(records, fake, max_per_step=4, batch_size=2)
  assert [j.record.example_id for j in judgements] == ["a", "c", "d", "e", "f", "g"]
  assert [j.choice for j in judgements] == ["C", "C", "B", None, None, "D"]
  assert [j.text for j in judgements][:2] == ["C", "The answer is (C)."]
  assert [len(b) for b in fake.batches] == [2, 2, 2]

  summary = judge.summarize(judgements, judge_model="fake", input_path="in",
                            groups=judge.order_groups(r.group for r in records))
  assert set(summary) == SUMMARY_KEYS
  assert list(summary["per_step"]) == ["1", "3", "7"]  # numeric order; 7 has no failures
  step3 = summary["per_step"]["3"]
  assert set(step3) == STEP_KEYS
  assert (step3["A"], step3["B"], step3["C"], step3["D"], step3["unparsed"]) == (0, 1, 2, 0, 1)
  assert step3["planning_strategy_fraction"] == pytest.approx(2 / 3)
  assert step3["others_fraction"] == pytest.approx(1 / 3)
  step1 = summary["per_step"]["1"]
  assert (step1["D"], step1["unparsed"], step1["planning_strategy_fraction"],
          step1["others_fraction"]) == (1, 1, 0.0, 1.0)
  assert summary["per_step"]["7"] == {"A": 0, "B": 0, "C": 0, "D": 0, "unparsed": 0,
                                      "planning_strategy_fraction": None,
                                      "others_fraction": None}
  assert summary["labels"] == judge.LABELS and summary["judge_model"] == "fake"


def test_all_unparsed_gives_null_fractions_and_no_cap_with_zero():
  records = [_record(0, str(i), 0.0) for i in range(5)]
  judgements = judge.judge_rollouts(records, lambda ps: ["?"] * len(ps), max_per_step=0)
  counts = judge.count_choices(j.choice for j in judgements)
  assert counts["unparsed"] == 5 and counts["planning_strategy_fraction"] is None
  assert judge.judge_rollouts(records, lambda ps: ["C"] * len(ps), max_per_step=2)[-1].record \
      .example_id == "1"


def test_a_judge_returning_the_wrong_number_of_answers_is_an_error():
  with pytest.raises(ValueError, match="returned 1 answers for 2 prompts"):
    judge.judge_rollouts([_record(0, "a", 0), _record(0, "b", 0)], lambda ps: ["C"])


def test_prompts_are_cleaned_and_truncated():
  seen = []
  record = _record(0, "a", 0.0, response="start " + "y" * 100 + " end<|im_end|>")
  judge.judge_rollouts([record], lambda ps: seen.extend(ps) or ["C"] * len(ps),
                       max_response_chars=20, special_tokens=["<extra>"])
  (prompt,) = seen
  assert "<|im_end|>" not in prompt and "start" not in prompt and "y end" in prompt


# ------------------------------------------------------------------ input formats


def _dump_rows(step, rewards):
  return [{"step": step, "example_id": f"ex{step}-{i}",
           "prompt": CHATML_PROMPT.format(problem=f"Problem {step}.{i}"),
           "completion": f"Solution {step}.{i} \\boxed{{{i}}}<|im_end|>", "reward": r,
           "planning_spans": ["First, I will"]} for i, r in enumerate(rewards)]


def _write_gz(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def _write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def _workdir_with_dumps(root):
  """A training workdir with rollouts/step_*.jsonl.gz (steps 2 and 12) and a samples.jsonl."""
  _write_gz(str(root / "rollouts" / "step_000012.jsonl.gz"), _dump_rows(12, [0.0, 1.0, 0.0]))
  _write_gz(str(root / "rollouts" / "step_000002.jsonl.gz"), _dump_rows(2, [0.0, 0.0]))
  _write_jsonl(str(root / "samples.jsonl"), _dump_rows(2, [0.0]) + _dump_rows(4, [1.0]))
  return root


def _eval_folder(root, label="policy@40"):
  """An eval output folder as `hicra-jax eval` writes it (real report code), with its benchmark."""
  bench_file = root / "bench" / "gsm8k_test.jsonl"
  _write_jsonl(str(bench_file), [{"id": f"g{i}", "problem": f"How many apples? ({i})",
                                  "answer": str(i)} for i in range(2)])
  grade = lambda reward: types.SimpleNamespace(answer="1", reward=reward, status="ok", detail="")
  samples = tuple(sample_record("gsm8k", {"id": f"g{i}", "answer": str(i)}, k,
                                f"completion {i}.{k}", grade(float(i == 1 and k == 0)), 10, "stop")
                  for i in range(2) for k in range(2))
  result = BenchmarkResult(name="gsm8k", display="GSM8K", source=str(bench_file), k=2,
                           num_problems=2, avg_at_k=0.25, pass_at_k={"1": 0.25}, num_correct=1,
                           mean_length=10.0, truncated_rate=0.0, no_answer_rate=0.0,
                           status_counts={"ok": 4})
  write_report(EvalReport(label=label, protocol={}, results=(result,), samples=samples),
               str(root / "eval"))
  return root / "eval"


def test_format_detection_per_record():
  train = _dump_rows(1, [0.0])[0]
  assert judge.detect_format(train) == "train"
  assert judge.detect_format({k: v for k, v in train.items() if k != "planning_spans"}) == "train"
  assert judge.detect_format({"step": 1, "example_id": 0, "prompt_ids": [1], "completion_ids": [2],
                              "reward": 0.0, "planning_spans": []}) == "train_ids"
  grade = types.SimpleNamespace(answer=None, reward=0.0, status="no_answer", detail="")
  record = sample_record("math500", {"id": "m1", "answer": "3"}, 0, "text", grade, 5, "length")
  assert judge.detect_format(record) == "eval"
  assert judge.detect_format({"step": 1, "loss": 0.3}) is None
  assert judge.detect_format([1, 2]) is None


def test_rollout_dumps_folder_and_workdir(tmp_path):
  workdir = _workdir_with_dumps(tmp_path / "run")
  for path in (workdir / "rollouts", workdir):  # a folder of dumps, or the workdir holding one
    records = judge.read_records(str(path))
    assert [(r.step, r.example_id, r.reward) for r in records] == [
        (2, "ex2-0", 0.0), (2, "ex2-1", 0.0), (12, "ex12-0", 0.0), (12, "ex12-1", 1.0),
        (12, "ex12-2", 0.0)]
    assert records[0].problem == "Problem 2.0" and records[0].group == "2"
    assert records[0].response.startswith("Solution 2.0")
    assert records[0].source.endswith("step_000002.jsonl.gz:1")
  assert judge.default_output(str(workdir / "rollouts")) == str(workdir)
  assert judge.default_output(str(workdir)) == str(workdir)
  one = judge.read_records(str(workdir / "rollouts" / "step_000012.jsonl.gz"))
  assert [r.step for r in one] == [12, 12, 12]


def test_reads_the_trainers_own_rollout_dump(tmp_path):
  """The dump as `hicra_jax.train.samples.write_rollout_dump` writes it, read from the workdir."""
  from hicra_jax.train.samples import write_rollout_dump  # pylint: disable=import-outside-toplevel
  entries = [{k: v for k, v in row.items() if k != "step"} for row in _dump_rows(3, [0.0, 1.0])]
  write_rollout_dump(str(tmp_path), 3, entries)
  records = judge.read_records(str(tmp_path))
  assert [(r.step, r.example_id, r.failed, r.problem) for r in records] == [
      (3, "ex3-0", True, "Problem 3.0"), (3, "ex3-1", False, "Problem 3.1")]


def test_run_samples_jsonl(tmp_path):
  workdir = _workdir_with_dumps(tmp_path / "run")
  records = judge.read_records(str(workdir / "samples.jsonl"))
  assert [(r.group, r.failed) for r in records] == [("2", True), ("4", False)]
  assert judge.default_output(str(workdir / "samples.jsonl")) == str(workdir)
  os.remove(workdir / "rollouts" / "step_000002.jsonl.gz")
  os.remove(workdir / "rollouts" / "step_000012.jsonl.gz")
  assert len(judge.read_records(str(workdir))) == 2  # no dumps: the workdir's samples.jsonl


def test_eval_samples_jsonl_gets_its_label_and_problem_texts(tmp_path):
  folder = _eval_folder(tmp_path)
  records = judge.read_records(str(folder / "samples.jsonl"))
  assert [(r.group, r.example_id, r.sample_index, r.failed) for r in records] == [
      ("policy@40", "g0", 0, True), ("policy@40", "g0", 1, True), ("policy@40", "g1", 0, False),
      ("policy@40", "g1", 1, True)]
  assert records[0].problem == "How many apples? (0)" and records[0].reference == "0"
  assert records[0].step is None
  assert judge.read_records(str(folder))[0].group == "policy@40"  # the folder works too
  os.remove(folder / "summary.json")  # without it: the folder name, a placeholder problem
  records = judge.read_records(str(folder / "samples.jsonl"))
  assert records[0].group == "eval" and "not in the samples file" in records[0].problem
  row = json.loads((folder / "samples.jsonl").read_text().splitlines()[0])
  row["checkpoint"] = "ckpt-7"
  assert judge.to_record(row, "x:1").group == "ckpt-7"


def test_unknown_formats_and_bad_lines_name_the_file_and_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  _write_jsonl(str(path), _dump_rows(1, [0.0]) + [{"step": 1, "loss": 0.5}])
  with pytest.raises(judge.InputFormatError, match=r"metrics\.jsonl:2: unknown record format"):
    judge.read_records(str(path))
  path.write_text('{"step": 1,\n')
  with pytest.raises(judge.InputFormatError, match=r"metrics\.jsonl:1: not valid JSON"):
    judge.read_records(str(path))
  _write_jsonl(str(path), [{"step": 1, "prompt_ids": [1], "completion_ids": [2], "reward": 0.0}])
  with pytest.raises(judge.InputFormatError, match=r"metrics\.jsonl:1: .*token ids"):
    judge.read_records(str(path))
  _write_jsonl(str(path), [{**_dump_rows(1, [0.0])[0], "reward": "bad"}])
  with pytest.raises(judge.InputFormatError, match=r"metrics\.jsonl:1: 'reward'"):
    judge.read_records(str(path))
  (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip")
  with pytest.raises(judge.InputFormatError, match=r"broken\.jsonl\.gz: cannot be read"):
    judge.read_records(str(tmp_path / "broken.jsonl.gz"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no rollout dumps"):
    judge.input_files(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    judge.input_files(str(tmp_path / "missing"))


# ------------------------------------------------------------------ the command


def _judge_argv(**fields):
  return ["hicra-jax", "judge"] + [f"--config.{k}={v}" for k, v in fields.items()]


def _exit_code(argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  return exit_info.value.code


def test_registered_with_every_field_described():
  assert "judge" in cli.COMMANDS and "judge" in cli.usage()
  assert judge_command.validate(judge_command.get_config()).max_new_tokens == 16
  assert {field for field, _, _ in cli.describe_command("judge")} >= {
      "input", "output", "model", "max_per_step", "max_new_tokens", "max_response_chars"}


@pytest.mark.parametrize("field,value,message", [
    ("input", "/no/such/rollouts", "config field 'input' = '/no/such/rollouts'"),
    ("model", "/no/such/model.gguf", "config field 'model' = '/no/such/model.gguf'"),
    ("max_per_step", "-1", "config field 'max_per_step' = -1"),
    ("max_new_tokens", "0", "config field 'max_new_tokens' = 0"),
])
def test_bad_fields_are_config_errors(field, value, message, capsys):
  assert _exit_code(_judge_argv(**{field: value})) == 2
  assert message in capsys.readouterr().err


def test_missing_or_empty_input_is_a_config_error(tmp_path, capsys):
  assert _exit_code(_judge_argv()) == 2
  assert "config field 'input' = ''" in capsys.readouterr().err
  empty = tmp_path / "samples.jsonl"
  empty.write_text("")
  assert _exit_code(_judge_argv(input=empty)) == 2
  assert "at least one rollout (found none)" in capsys.readouterr().err
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"x": 1}\n')
  assert _exit_code(_judge_argv(input=bad)) == 2
  assert f"{bad}:1: unknown record format" in capsys.readouterr().err


def _no_model(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("the model was loaded")
  monkeypatch.setattr("hicra_jax.models.load_pretrained", fail)


def test_no_failed_rollouts_writes_an_empty_summary_without_a_model(tmp_path, monkeypatch,
                                                                     capsys):
  _no_model(monkeypatch)
  path = tmp_path / "samples.jsonl"
  _write_jsonl(str(path), _dump_rows(5, [1.0, 1.0]))
  assert _exit_code(_judge_argv(input=path)) == 0
  assert "no failed rollouts" in capsys.readouterr().out
  summary = json.loads((tmp_path / "judge_summary.json").read_text())
  assert set(summary) == SUMMARY_KEYS and summary["input"] == str(path)
  assert summary["per_step"] == {"5": {"A": 0, "B": 0, "C": 0, "D": 0, "unparsed": 0,
                                       "planning_strategy_fraction": None,
                                       "others_fraction": None}}
  assert (tmp_path / "judge.jsonl").read_text() == ""


def test_command_with_a_fake_judge_writes_both_files(tmp_path, monkeypatch):
  workdir = _workdir_with_dumps(tmp_path / "run")
  monkeypatch.setattr("hicra_jax.models.load_pretrained", lambda path, dtype: (None, None))
  monkeypatch.setattr("hicra_jax.models.load_tokenizer",
                      lambda path: types.SimpleNamespace(all_special_tokens=["</s>"]))
  answers = iter(["C", "Answer: B", "gibberish", "(C)"])
  monkeypatch.setattr(judge_command, "make_ask",
                      lambda model, tokenizer, config: lambda ps: [next(answers) for _ in ps])
  out = tmp_path / "out"
  argv = _judge_argv(input=workdir / "rollouts", output=out, max_per_step=2, batch_size=3)
  assert _exit_code(argv) == 0
  lines = [json.loads(x) for x in (out / "judge.jsonl").read_text().splitlines()]
  assert [(x["step"], x["example_id"], x["choice"], x["judge_text"]) for x in lines] == [
      (2, "ex2-0", "C", "C"), (2, "ex2-1", "B", "Answer: B"), (12, "ex12-0", None, "gibberish"),
      (12, "ex12-2", "C", "(C)")]
  summary = json.loads((out / "judge_summary.json").read_text())
  assert summary["judge_model"] == "smollm2"
  assert summary["per_step"]["2"]["planning_strategy_fraction"] == 0.5
  assert summary["per_step"]["12"] == {"A": 0, "B": 0, "C": 1, "D": 0, "unparsed": 1,
                                       "planning_strategy_fraction": 1.0,
                                       "others_fraction": 0.0}


# ------------------------------------------------------------------ the real judge


@pytest.mark.slow
def test_end_to_end_smollm2_judges_four_failed_rollouts(smollm2_ours, smollm2_tokenizer,
                                                        tmp_path, monkeypatch):
  """The CLI with SmolLM2-135M-Instruct (loaded once per session) through the real sampler."""
  monkeypatch.setattr("hicra_jax.models.load_pretrained", lambda path, dtype: smollm2_ours)
  monkeypatch.setattr("hicra_jax.models.load_tokenizer", lambda path: smollm2_tokenizer)
  rows = [{"step": step, "example_id": f"p{i}",
           "prompt": CHATML_PROMPT.format(problem=f"What is {i} + {i + 1}?"),
           "completion": f"{i} + {i + 1} = {3 * i} so the answer is \\boxed{{{3 * i}}}.<|im_end|>",
           "reward": reward, "planning_spans": []}
          for i, (step, reward) in enumerate([(1, 0.0), (1, 1.0), (1, 0.0), (2, 0.0), (2, 0.0)])]
  _write_gz(str(tmp_path / "rollouts" / "step_000001.jsonl.gz"), [r for r in rows if r["step"] == 1])
  _write_gz(str(tmp_path / "rollouts" / "step_000002.jsonl.gz"), [r for r in rows if r["step"] == 2])
  argv = _judge_argv(input=tmp_path / "rollouts", model="smollm2",
                     max_new_tokens=4)
  assert _exit_code(argv) == 0
  summary = json.loads((tmp_path / "judge_summary.json").read_text())
  assert set(summary) == SUMMARY_KEYS and list(summary["per_step"]) == ["1", "2"]
  total = sum(c[k] for c in summary["per_step"].values() for k in ("A", "B", "C", "D", "unparsed"))
  assert total == 4
  lines = [json.loads(x) for x in (tmp_path / "judge.jsonl").read_text().splitlines()]
  assert len(lines) == 4 and all(isinstance(x["judge_text"], str) for x in lines)
  assert all(x["choice"] == judge.parse_choice(x["judge_text"]) for x in lines)
