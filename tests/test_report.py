"""`hicra-jax report` and hicra_jax.report: figures, Table 1, sample pages and summary.json from
hand-made run workdirs (no jax, no model)."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hicra_jax import cli
from hicra_jax import report
from hicra_jax.report import build, pages

PNG = b"\x89PNG\r\n\x1a\n"
E = math.exp


def _write_jsonl(path: Path, records) -> None:
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _write_json(path: Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data), encoding="utf-8")


HICRA_STEPS = [
    # step, log_ppl_planning, log_ppl_execution, fork_top_entropy_planning, fork_planning_top_entropy
    (1, 2.0, 1.0, 0.1, 0.5),
    (2, 1.8, "nan", 0.2, 0.7),
    (3, 1.5, 0.7, 0.3, 0.6),
    (4, 1.2, 0.6, 0.4, 0.8),
]


@pytest.fixture
def two_runs(tmp_path):
  """hicra: 4 steps, every metric but rel_ppl_*; grpo: 2 steps, logs rel_ppl_* itself and lacks
  entropy_t1_*, semantic entropy, conditional entropy and the fork fractions."""
  hicra, grpo = tmp_path / "hicra_run", tmp_path / "grpo_run"
  hicra.mkdir()
  grpo.mkdir()
  records = []
  for step, lp, lx, top, plan in HICRA_STEPS:
    r = {"step": step, "reward_mean": 0.1 * step, "accuracy": 0.2 * step,
         "response_length_mean": 100 + 10 * step, "entropy": 1.0, "entropy_planning": 1.4,
         "entropy_execution": 0.9, "entropy_t1": 1.1, "entropy_t1_planning": 1.6 - 0.1 * step,
         "entropy_t1_execution": 0.8, "log_ppl_planning": lp, "log_ppl_execution": lx,
         "semantic_entropy": 2.0 + 0.1 * step, "sg_conditional_entropy": 1.0 + 0.05 * step,
         "fork_top_entropy_planning_fraction": top, "fork_planning_top_entropy_fraction": plan,
         "loss": "inf" if step == 3 else 0.5, "example_ids": [1, 2]}
    if step % 2 == 0:
      r["eval_accuracy"] = 0.3 + 0.1 * step
    records.append(r)
  _write_jsonl(hicra / "metrics.jsonl", records)
  _write_jsonl(grpo / "metrics.jsonl", [
      {"step": 1, "accuracy": 0.1, "response_length_mean": 90, "entropy": 0.95,
       "entropy_planning": 1.2, "entropy_execution": 0.7, "rel_ppl_planning": 1.0,
       "rel_ppl_execution": 1.0},
      {"step": 2, "accuracy": 0.3, "response_length_mean": 95, "entropy": 0.9,
       "entropy_planning": 1.1, "entropy_execution": 0.6, "rel_ppl_planning": 0.9,
       "rel_ppl_execution": 0.8, "eval_gsm8k_avg_at_k": 0.4},
  ])
  _write_jsonl(hicra / "samples.jsonl", [
      {"step": 1, "example_id": 7, "reward": 1.0, "prompt": "Find x. <b>bold</b>",
       "completion": "Let's try x=2. <script>alert('x')</script> It fails. Let's try x=3. Done.",
       "planning_spans": ["Let's try", "Let's try"]},
  ])
  _write_jsonl(grpo / "samples.jsonl", [
      {"step": 2, "example_id": 8, "reward": 0.0, "prompt_ids": [1, 2],
       "completion_ids": [5, 6, 7, 8, 6, 7], "planning_spans": [[6, 7], [6, 7]]},
  ])
  _write_json(hicra / "eval" / "step_4" / "summary.json", {
      "label": "hicra@4", "protocol": {}, "benchmarks": {
          "aime24": {"name": "aime24", "display": "AIME24", "k": 32, "avg_at_k": 0.731,
                     "pass_at_k": {"1": 0.731}},
          "math500": {"name": "math500", "display": "MATH500", "k": 1, "avg_at_k": 0.972,
                      "pass_at_k": {"1": 0.972}}}})
  _write_json(grpo / "eval" / "summary.json", {
      "label": "grpo", "protocol": {}, "benchmarks": {
          "aime24": {"display": "AIME24", "avg_at_k": 0.685, "pass_at_k": {}},
          "math500": {"display": "MATH500", "avg_at_k": 0.962, "pass_at_k": {}},
          "gsm8k": {"display": "GSM8K", "avg_at_k": 0.9, "pass_at_k": {}}}})
  _write_json(hicra / "judge_summary.json", {
      "per_step": {"10": {"A": 1, "B": 1, "C": 2, "D": 0, "unparsed": 3},
                   "5": {"A": 0, "B": 1, "C": 3, "D": 0, "unparsed": 0},
                   "6": {"A": 0, "B": 0, "C": 0, "D": 0, "unparsed": 2}},
      "labels": {"A": "unrelated", "B": "execution", "C": "plan", "D": "other"}})
  return hicra, grpo


@pytest.fixture
def written(two_runs, tmp_path):
  hicra, grpo = two_runs
  runs = [report.load_run(str(hicra), "hicra"), report.load_run(str(grpo), "grpo")]
  out = tmp_path / "out"
  summary = report.write_report(runs, str(out))
  return out, summary


def _run(summary, label):
  return next(r for r in summary["runs"] if r["label"] == label)


# ---- pure functions -----------------------------------------------------------


def test_relative_perplexity_by_hand():
  got = report.relative_perplexity([1, 2, 3], [2.0, 1.5, float("nan")])
  assert got[:2] == [1.0, E(1.5 - 2.0)] and math.isnan(got[2])
  # the reference is the earliest step, whatever the order
  assert report.relative_perplexity([2, 0, 1], [1.0, 2.0, 1.5]) == [E(-1.0), 1.0, E(-0.5)]
  # a non-finite first value: the first finite one is the reference
  got = report.relative_perplexity([0, 1, 2], [float("inf"), 1.0, 2.0])
  assert math.isnan(got[0]) and got[1:] == [1.0, E(1.0)]
  assert all(math.isnan(v) for v in report.relative_perplexity([0, 1], [float("nan")] * 2))
  assert report.relative_perplexity([0, 1], [0.0, 1e6]) == [1.0, math.inf]
  with pytest.raises(ValueError, match="length"):
    report.relative_perplexity([0], [1.0, 2.0])


def test_smooth_is_a_trailing_mean_that_skips_non_finite_values():
  assert report.smooth([1, 2, 3, 4], 2) == [1.0, 1.5, 2.5, 3.5]
  assert report.smooth([1, 2, 3, 4], 3) == [1.0, 1.5, 2.0, 3.0]
  assert report.smooth([1.0, float("nan"), 3.0], 2) == [1.0, 1.0, 3.0]
  assert math.isnan(report.smooth([float("nan"), float("nan")], 2)[1])
  assert report.smooth([1, 5], 1) == [1.0, 5.0]
  with pytest.raises(ValueError):
    report.smooth([1.0], 0)


def test_tail_mean_and_judge_fractions():
  assert report.tail_mean([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], 0) == (pytest.approx(0.25),
                                                                      [1, 2, 3, 4])
  assert report.tail_mean([1, 2, 3, 4], [0.1, 0.2, 0.3, float("nan")], 2) == (0.3, [3])
  got = report.judge_fractions({"10": {"A": 1, "B": 1, "C": 2, "D": 0, "unparsed": 3},
                                "5": {"C": 1, "D": 3}, "x": {"C": 1}, "7": {"unparsed": 2}})
  assert got == {"steps": [5, 10], "planning_strategy": [0.25, 0.5], "others": [0.75, 0.5],
                 "judged": [4, 4], "unparsed": [0, 3]}


def test_read_metrics_parses_non_finite_strings_and_keeps_the_last_repeat(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "a": "nan", "b": "inf", "c": "-inf", "s": "text", "f": true}\n'
                  '{"step": 2, "a": 1.0}\nnot json\n{"step": 2, "a": 3.0}\n{"a": 5}\n',
                  encoding="utf-8")
  notes = []
  metrics = report.read_metrics(str(path), notes)
  assert sorted(metrics) == ["a", "b", "c"]
  assert metrics["a"].steps == (1, 2) and math.isnan(metrics["a"].values[0])
  assert metrics["a"].values[1] == 3.0
  assert metrics["b"].values == (math.inf,) and metrics["c"].values == (-math.inf,)
  text = " ".join(notes)
  assert "not JSON" in text and "more than once" in text and "without an integer" in text


def test_locate_and_highlight_spans():
  text = "Let's try a <b>. Then let's try. Let's try again."
  ranges, missing = report.locate_spans(text, ["Let's try", "Let's try", "absent"])
  assert ranges == [(0, 9), (33, 42)] and missing == 1
  out = report.highlight(text, ranges)
  assert out == ('<mark class="plan">Let&#x27;s try</mark> a &lt;b&gt;. Then let&#x27;s try. '
                 '<mark class="plan">Let&#x27;s try</mark> again.')
  ranges, missing = report.locate_spans([5, 6, 7, 8, 6, 7], [[6, 7], [6, 7]])
  assert ranges == [(1, 3), (4, 6)] and missing == 0
  assert report.highlight([5, 6, 7, 8, 6, 7], ranges) == (
      '5 <mark class="plan">6 7</mark> 8 <mark class="plan">6 7</mark>')


def test_run_label_sources(tmp_path):
  run = tmp_path / "my_run"
  run.mkdir()
  _write_jsonl(run / "metrics.jsonl", [{"step": 1, "accuracy": 0.5}])
  assert report.run_label(str(run)) == ("my_run", "directory")
  _write_json(run / "config.json", {"algorithm": "hicra"})
  assert report.run_label(str(run)) == ("hicra", "config.json")
  assert report.run_label(str(run), "mine") == ("mine", "labels")
  assert report.load_run(str(run)).label == "hicra"


def test_a_run_without_metrics_is_an_error_naming_it(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty.*metrics.jsonl"):
    report.load_run(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    report.load_run(str(tmp_path / "nowhere"))


# ---- the written report ---------------------------------------------------------


def test_relative_perplexity_in_summary_equals_hand_computation(written):
  _, summary = written
  metrics = _run(summary, "hicra")["metrics"]
  planning = metrics["rel_ppl_planning"]
  assert planning["derived_from"] == "log_ppl_planning"
  assert planning["steps"] == [1, 2, 3, 4]
  assert planning["values"] == pytest.approx([1.0, E(-0.2), E(-0.5), E(-0.8)])
  execution = metrics["rel_ppl_execution"]
  assert execution["values"][1] is None  # "nan" logged at step 2
  assert [execution["values"][i] for i in (0, 2, 3)] == pytest.approx([1.0, E(-0.3), E(-0.4)])
  # grpo logged rel_ppl itself: used as is
  grpo = _run(summary, "grpo")["metrics"]
  assert grpo["rel_ppl_planning"] == {"steps": [1, 2], "values": [1.0, 0.9]}
  assert _run(summary, "grpo")["dynamics"]["relative_perplexity"] == "logged rel_ppl"


def test_fork_fractions_are_the_input_means(two_runs, written, tmp_path):
  _, summary = written
  fork = summary["fork"]["runs"]
  assert sorted(fork) == ["hicra"]
  tops = [r[3] for r in HICRA_STEPS]
  plans = [r[4] for r in HICRA_STEPS]
  assert fork["hicra"]["fork_top_entropy_planning_fraction"]["mean"] == pytest.approx(
      sum(tops) / 4)
  assert fork["hicra"]["fork_planning_top_entropy_fraction"]["mean"] == pytest.approx(
      sum(plans) / 4)
  # the last K logged steps only
  hicra, grpo = two_runs
  last2 = report.write_report([report.load_run(str(hicra), "hicra")], str(tmp_path / "k"),
                              fork_last=2)
  entry = last2["fork"]["runs"]["hicra"]["fork_top_entropy_planning_fraction"]
  assert entry == {"mean": pytest.approx((tops[2] + tops[3]) / 2), "steps": [3, 4]}


def test_every_figure_is_a_readable_png(written):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out, summary = written
  assert summary["figures"] == ["fork_overlap.png", "grpo_dynamics.png", "hicra_dynamics.png",
                                "hicra_errors.png", "overlays.png"]
  for name in summary["figures"]:
    data = (out / name).read_bytes()
    assert data.startswith(PNG), name
    with Image.open(io.BytesIO(data)) as image:
      image.verify()
    with Image.open(io.BytesIO(data)) as image:
      assert image.size[0] > 300 and image.size[1] > 200
  assert sorted(p.name for p in out.iterdir()) == summary["files"]


class _Collector(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.imgs, self.marks, self.tags, self._in_mark = [], [], [], False
    self.text = []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    if tag == "img":
      self.imgs.append(dict(attrs))
    if tag == "mark":
      self._in_mark = True
      self.marks.append("")

  def handle_endtag(self, tag):
    if tag == "mark":
      self._in_mark = False

  def handle_data(self, data):
    self.text.append(data)
    if self._in_mark:
      self.marks[-1] += data


def _parse(text: str) -> _Collector:
  parser = _Collector()
  parser.feed(text)
  parser.close()
  return parser


def test_index_html_inlines_every_figure_and_shows_the_notes(written):
  out, summary = written
  page = (out / "index.html").read_text(encoding="utf-8")
  parsed = _parse(page)
  inline = {img["data-file"]: img["src"] for img in parsed.imgs}
  assert sorted(inline) == summary["figures"]
  for name, src in inline.items():
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    assert base64.b64decode(src[len(prefix):]) == (out / name).read_bytes()
  text = "".join(parsed.text)
  for note in summary["notes"]:
    assert note in text
  assert 'href="samples.html"' in page
  assert "script" not in parsed.tags  # the sample's <script> is text
  assert "<table" in page and "HICRA - GRPO" in text


def test_notes_name_missing_metrics_and_different_lengths(written):
  _, summary = written
  notes = summary["notes"]
  assert any(n.startswith("runs cover different steps") and "hicra: 1-4" in n
             and "grpo: 1-2" in n for n in notes)
  missing = next(n for n in notes if n.startswith("grpo: not logged:"))
  for name in ("semantic_entropy", "sg_conditional_entropy"):
    assert name in missing
  assert "grpo: no fork_* fractions logged; not in fork_overlap.png" in notes
  assert any(n.startswith("grpo: entropy_t1_planning/execution not logged") for n in notes)
  assert any(n.startswith("hicra: rel_ppl_planning/execution not logged; computed") for n in notes)
  assert not any(n.startswith("hicra: not logged") for n in notes)
  # the overlays use each run's own metric and say which
  panels = {p["title"]: p for p in summary["overlays"]["panels"]}
  entropy = panels["Token entropy (entropy_t1/entropy)"]
  assert entropy["metric"] == {"hicra": "entropy_t1", "grpo": "entropy"}
  assert panels["Validation accuracy (eval_accuracy)"]["values"] == {
      "hicra": pytest.approx([0.5, 0.7])}
  assert panels["Validation avg@k: gsm8k (eval_gsm8k_avg_at_k)"]["steps"] == {"grpo": [2]}


def test_table1_markdown_exact_with_the_delta_row(written):
  out, summary = written
  expected = textwrap.dedent("""\
      | run | AIME24 | MATH500 | GSM8K |
      |---|---|---|---|
      | hicra | 73.1 | 97.2 |  |
      | grpo | 68.5 | 96.2 | 90.0 |
      | HICRA - GRPO | +4.6 | +1.0 |  |
      """)
  assert (out / "table1.md").read_text(encoding="utf-8") == expected
  assert summary["table1"]["markdown"] == expected
  assert summary["table1"]["delta"]["values"]["gsm8k"] is None
  # no delta row without both labels
  rows = [("a", {"x": {"display": "X", "avg_at_k": 0.5}}), ("grpo", {"x": {"avg_at_k": 0.25}})]
  assert report.table1(rows) == "| run | X |\n|---|---|\n| a | 50.0 |\n| grpo | 25.0 |\n"


def test_samples_html_highlights_spans_and_escapes_script(written):
  out, _ = written
  page = (out / "samples.html").read_text(encoding="utf-8")
  parsed = _parse(page)
  assert "script" not in parsed.tags
  assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
  assert "&lt;b&gt;bold&lt;/b&gt;" in page  # the prompt
  # the legend's example mark, then both spans of hicra and both of grpo (token ids)
  assert parsed.marks == ["highlighted", "Let's try", "Let's try", "6 7", "6 7"]


def test_judge_figure_numbers(written):
  out, summary = written
  judge = summary["judge"]["hicra"]
  assert judge["steps"] == [5, 10]
  assert judge["planning_strategy"] == [0.75, 0.5] and judge["others"] == [0.25, 0.5]
  assert _run(summary, "hicra")["errors_figure"] == "hicra_errors.png"
  assert "grpo" not in summary["judge"]


def test_summary_json_exact_for_a_small_run(tmp_path):
  run = tmp_path / "solo"
  run.mkdir()
  _write_jsonl(run / "metrics.jsonl", [
      {"step": 0, "log_ppl_planning": 2.0, "log_ppl_execution": 1.0, "accuracy": 0.25,
       "response_length_mean": 100, "entropy_t1": 1.5, "entropy_t1_planning": 2.0,
       "entropy_t1_execution": 1.0, "semantic_entropy": 3.0, "sg_conditional_entropy": 1.5,
       "fork_top_entropy_planning_fraction": 0.25, "fork_planning_top_entropy_fraction": 0.5,
       "eval_accuracy": 0.5},
      {"step": 1, "log_ppl_planning": 1.5, "log_ppl_execution": "nan", "accuracy": 0.75,
       "response_length_mean": 120, "entropy_t1": 1.25, "entropy_t1_planning": 1.5,
       "entropy_t1_execution": 0.5, "semantic_entropy": 2.5, "sg_conditional_entropy": 1.0,
       "fork_top_entropy_planning_fraction": 0.75, "fork_planning_top_entropy_fraction": 1.0,
       "loss": "inf"},
  ])
  series = lambda *values: {"steps": [0, 1], "values": list(values)}
  expected = {
      "version": 1,
      "runs": [{
          "label": "solo", "label_source": "directory", "path": str(run), "steps": [0, 1],
          "num_logged_steps": 2, "eval_files": [], "num_samples": 0,
          "dynamics": {"figure": "solo_dynamics.png",
                       "relative_perplexity": "from log_ppl, normalized by the first step",
                       "token_entropy": "at T=1 (entropy_t1_*)"},
          "metrics": {
              "rel_ppl_planning": {**series(1.0, E(-0.5)), "derived_from": "log_ppl_planning"},
              "rel_ppl_execution": {**series(1.0, None), "derived_from": "log_ppl_execution"},
              "entropy_t1_planning": series(2.0, 1.5),
              "entropy_t1_execution": series(1.0, 0.5),
              "semantic_entropy": series(3.0, 2.5),
              "sg_conditional_entropy": series(1.5, 1.0),
              "accuracy": series(0.25, 0.75),
              "response_length_mean": series(100.0, 120.0),
              "eval_accuracy": {"steps": [0], "values": [0.5]},
              "entropy_t1": series(1.5, 1.25),
              "fork_top_entropy_planning_fraction": series(0.25, 0.75),
              "fork_planning_top_entropy_fraction": series(0.5, 1.0),
          }}],
      "overlays": {
          "smooth": {"window": 1, "kind": build.SMOOTH_KIND},
          "panels": [
              {"title": "Validation accuracy (eval_accuracy)", "metric": {"solo": "eval_accuracy"},
               "steps": {"solo": [0]}, "values": {"solo": [0.5]}},
              {"title": "Semantic entropy (semantic_entropy)",
               "metric": {"solo": "semantic_entropy"}, "steps": {"solo": [0, 1]},
               "values": {"solo": [3.0, 2.5]}},
              {"title": "Token entropy (entropy_t1)", "metric": {"solo": "entropy_t1"},
               "steps": {"solo": [0, 1]}, "values": {"solo": [1.5, 1.25]}},
              {"title": "Response length (response_length_mean)",
               "metric": {"solo": "response_length_mean"}, "steps": {"solo": [0, 1]},
               "values": {"solo": [100.0, 120.0]}},
          ]},
      "fork": {"last": 0, "metrics": build.FORK_METRICS, "runs": {"solo": {
          "fork_top_entropy_planning_fraction": {"mean": 0.5, "steps": [0, 1]},
          "fork_planning_top_entropy_fraction": {"mean": 0.75, "steps": [0, 1]}}}},
      "judge": {},
      "table1": None,
      "figures": ["fork_overlap.png", "overlays.png", "solo_dynamics.png"],
      "files": ["fork_overlap.png", "index.html", "overlays.png", "samples.html",
                "solo_dynamics.png", "summary.json"],
      "notes": [
          "solo: rel_ppl_planning/execution not logged; computed from log_ppl as "
          "exp(log_ppl - log_ppl at the first logged step)",
          "no run has an eval summary.json (`hicra-jax eval`); no table1.md",
          "solo: no samples.jsonl entries",
      ],
  }
  summary = report.write_report([report.load_run(str(run))], str(tmp_path / "a"))
  assert summary == expected
  text = (tmp_path / "a" / "summary.json").read_text(encoding="utf-8")
  assert json.loads(text) == expected
  assert text == json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
  # deterministic: a second report of the same run is byte-identical
  report.write_report([report.load_run(str(run))], str(tmp_path / "b"))
  for name in expected["files"]:
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_run_with_no_steps_and_repeated_labels_do_not_crash(tmp_path):
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
  (tmp_path / "a" / "metrics.jsonl").write_text("", encoding="utf-8")
  _write_jsonl(tmp_path / "b" / "metrics.jsonl", [{"step": 3, "accuracy": "nan"}])
  runs = [report.load_run(str(tmp_path / "a"), "x"), report.load_run(str(tmp_path / "b"), "x")]
  summary = report.write_report(runs, str(tmp_path / "out"), smooth_window=3)
  assert [r["label"] for r in summary["runs"]] == ["x", "x #2"]
  assert "x_dynamics.png" in summary["figures"] and "x_2_dynamics.png" in summary["figures"]
  assert "x: metrics.jsonl: no steps logged" in summary["notes"]
  for name in summary["figures"]:
    assert (tmp_path / "out" / name).read_bytes().startswith(PNG)


# ---- the command line ---------------------------------------------------------------


def test_cli_end_to_end_with_positional_runs(two_runs, tmp_path, capsys):
  hicra, grpo = two_runs
  out = tmp_path / "cli_out"
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "report", str(hicra), str(grpo), f"--config.output={out}",
              "--config.labels=hicra,grpo", "--config.smooth=2"])
  assert info.value.code == 0
  summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
  assert [r["label"] for r in summary["runs"]] == ["hicra", "grpo"]
  assert summary["overlays"]["smooth"]["window"] == 2
  assert (out / "table1.md").is_file() and (out / "index.html").is_file()
  assert "index.html" in capsys.readouterr().out


def test_cli_runs_field_and_errors(two_runs, tmp_path, capsys):
  hicra, grpo = two_runs
  config = cli.load_command_config(
      "report", ["hicra-jax report", f"--config.runs={hicra}", str(grpo)])
  assert config.runs == f"{hicra},{grpo}"
  (tmp_path / "no_metrics").mkdir()
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "report", str(hicra), str(tmp_path / "no_metrics"),
              f"--config.output={tmp_path / 'x'}"])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert "no_metrics" in err and "metrics.jsonl" in err
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "report", f"--config.output={tmp_path / 'x'}"])
  assert info.value.code == 2 and "no runs given" in capsys.readouterr().err
  with pytest.raises(SystemExit) as info:
    cli.main(["hicra-jax", "report", str(hicra), "--config.labels=a,b"])
  assert info.value.code == 2 and "labels" in capsys.readouterr().err
  assert "[RUNS ...]" in cli.command_help("report")


def test_report_imports_neither_jax_nor_pyplot(tmp_path):
  run = tmp_path / "r"
  run.mkdir()
  _write_jsonl(run / "metrics.jsonl", [{"step": 1, "accuracy": 0.5, "entropy": 1.0}])
  code = textwrap.dedent(f"""
      import sys
      import hicra_jax.cli
      from hicra_jax import report
      report.write_report([report.load_run({str(run)!r})], {str(tmp_path / 'out')!r})
      bad = sorted(m for m in sys.modules
                   if m == "jax" or m.startswith(("jax.", "jaxlib", "matplotlib.pyplot")))
      assert not bad, bad
      """)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "out" / "index.html").is_file()
