"""`write_report`: every figure, table and page of a report, from loaded runs.

Files written into the output folder (see the package docstring for what each
number is):

  <label>_dynamics.png   per run, the paper's Fig. 3: relative perplexity and token
                         entropy of planning vs execution tokens, semantic entropy
                         with the conditional entropy after an SG, accuracy with
                         response length
  overlays.png           all runs, Figs. 5-7: validation accuracy, semantic entropy,
                         token entropy, response length vs step (optionally smoothed)
  fork_overlap.png       Figs. 9/10: per run, the two fork-token overlap fractions
  <label>_errors.png     per run with judge_summary.json, Fig. 4: failure types per step
  table1.md              Table 1 from eval summaries (when any run has one)
  samples.html           sample completions, planning spans highlighted (Fig. 2)
  index.html             everything above in one self-contained page
  summary.json           every plotted number, the table, the notes (sorted keys)
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from hicra_jax.report import figures, pages, tables
from hicra_jax.report.runs import RunData, Series, unique_labels
from hicra_jax.report.series import judge_fractions, json_number, relative_perplexity, smooth
from hicra_jax.report.series import tail_mean

SUMMARY_VERSION = 1
FORK_METRICS = {
    "fork_top_entropy_planning_fraction":
        "share of the top-entropy (fork) tokens that are planning tokens",
    "fork_planning_top_entropy_fraction":
        "share of the planning tokens that are top-entropy (fork) tokens",
}
SMOOTH_KIND = "trailing moving average over each run's last `window` logged values"
_VALIDATION = re.compile(r"^eval_(.+)_avg_at_k$")


def file_slug(label: str) -> str:
  """A file-name-safe form of a label ("grpo #2" -> "grpo_2")."""
  return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-") or "run"


def _has_points(series: Series | None) -> bool:
  return series is not None and any(math.isfinite(v) for v in series.values)


class _Recorder:
  """Collects, per run, every series a figure draws (for summary.json) and what is missing."""

  def __init__(self):
    self.metrics: dict[str, dict[str, dict[str, Any]]] = {}
    self.missing: dict[str, list[str]] = {}

  def get(self, run: RunData, label: str, name: str, *, note: bool = True) -> Series | None:
    series = run.metrics.get(name)
    if not _has_points(series):
      if note and name not in self.missing.setdefault(label, []):
        self.missing[label].append(name)
      return None
    self.put(label, name, series)
    return series

  def put(self, label: str, name: str, series: Series, **extra: Any) -> None:
    self.metrics.setdefault(label, {})[name] = {
        "steps": list(series.steps), "values": [json_number(v) for v in series.values],
        **extra}


def _line(name: str, series: Series | None) -> tuple[figures.Line, ...]:
  return () if series is None else (figures.Line(name, series.steps, series.values),)


def _relative_ppl(run: RunData, label: str, rec: _Recorder, notes: list[str]):
  """(planning, execution) relative-perplexity series and a title suffix."""
  out, derived = [], []
  for cls in ("planning", "execution"):
    logged = rec.get(run, label, f"rel_ppl_{cls}", note=False)
    if logged is not None:
      out.append(logged)
      continue
    log_ppl = run.metrics.get(f"log_ppl_{cls}")
    if not _has_points(log_ppl):
      rec.missing.setdefault(label, []).append(f"rel_ppl_{cls} (and log_ppl_{cls})")
      out.append(None)
      continue
    series = Series(log_ppl.steps, tuple(relative_perplexity(log_ppl.steps, log_ppl.values)))
    rec.put(label, f"rel_ppl_{cls}", series, derived_from=f"log_ppl_{cls}")
    out.append(series)
    derived.append(cls)
  if derived:
    notes.append(f"{label}: rel_ppl_{'/'.join(derived)} not logged; computed from "
                 "log_ppl as exp(log_ppl - log_ppl at the first logged step)")
  suffix = "from log_ppl, normalized by the first step" if derived else "logged rel_ppl"
  return out[0], out[1], suffix


def _token_entropy(run: RunData, label: str, rec: _Recorder, notes: list[str]):
  """(planning, execution) token-entropy series and a title suffix: T=1 values when the
  run logged them, else the sampled-temperature ones."""
  t1 = [run.metrics.get(f"entropy_t1_{c}") for c in ("planning", "execution")]
  if any(_has_points(s) for s in t1):
    planning, execution = (rec.get(run, label, f"entropy_t1_{c}")
                           for c in ("planning", "execution"))
    return planning, execution, "at T=1 (entropy_t1_*)"
  planning, execution = (rec.get(run, label, f"entropy_{c}")
                         for c in ("planning", "execution"))
  if planning is not None or execution is not None:
    notes.append(f"{label}: entropy_t1_planning/execution not logged; the token-entropy "
                 "panel shows the sampled-temperature entropy_planning/execution")
  return planning, execution, "at the sampling temperature (entropy_*)"


def dynamics_panels(run: RunData, label: str, rec: _Recorder,
                    notes: list[str]) -> tuple[list[figures.Panel], dict[str, str]]:
  """The four panels of a run's Fig. 3 and what each drew from."""
  rp, rx, ppl_src = _relative_ppl(run, label, rec, notes)
  ep, ex, ent_src = _token_entropy(run, label, rec, notes)
  sem = rec.get(run, label, "semantic_entropy")
  cond = rec.get(run, label, "sg_conditional_entropy")
  acc = rec.get(run, label, "accuracy")
  length = rec.get(run, label, "response_length_mean")
  def missing(*names: str) -> str:
    return "not logged: " + ", ".join(names)

  ent = "entropy_t1" if ent_src.startswith("at T=1") else "entropy"
  panels = [
      figures.Panel(f"Relative perplexity ({ppl_src})", "perplexity / perplexity at start",
                    _line("planning", rp) + _line("execution", rx),
                    empty=missing("rel_ppl_planning", "rel_ppl_execution", "log_ppl_*")),
      figures.Panel(f"Token entropy {ent_src}", "nats",
                    _line("planning", ep) + _line("execution", ex),
                    empty=missing(f"{ent}_planning", f"{ent}_execution")),
      figures.Panel("Semantic entropy (left) and conditional entropy after an SG (right)",
                    "semantic entropy (nats)", _line("semantic entropy", sem),
                    "conditional entropy (nats)", _line("conditional entropy", cond),
                    empty=missing("semantic_entropy", "sg_conditional_entropy")),
      figures.Panel("Accuracy (left) and response length (right)", "accuracy",
                    _line("accuracy", acc), "tokens", _line("response length", length),
                    empty=missing("accuracy", "response_length_mean")),
  ]
  return panels, {"relative_perplexity": ppl_src, "token_entropy": ent_src}


def _validation_metrics(runs: Sequence[RunData]) -> list[str]:
  names = {name for run in runs for name, s in run.metrics.items()
           if _has_points(s) and (name == "eval_accuracy" or _VALIDATION.match(name))}
  return sorted(names, key=lambda n: (n != "eval_accuracy", n))


def overlay_panels(runs: Sequence[RunData], labels: Sequence[str], rec: _Recorder,
                   window: int, notes: list[str]) -> tuple[list[figures.Panel], list[dict]]:
  """Panels comparing runs (Figs. 5-7) and their plotted numbers for summary.json."""
  specs: list[tuple[str, str, list[str]]] = []  # (title, ylabel, candidate metrics)
  validation = _validation_metrics(runs)
  for name in validation:
    match = _VALIDATION.match(name)
    title = "Validation accuracy" if match is None else f"Validation avg@k: {match.group(1)}"
    specs.append((f"{title} ({name})", "accuracy", [name]))
  if not validation:
    specs.append(("Validation accuracy (eval_accuracy / eval_*_avg_at_k)", "accuracy",
                  ["eval_accuracy"]))
    notes.append("no run logged a validation metric (eval_accuracy or "
                 "eval_<benchmark>_avg_at_k); the validation panel is empty")
  else:
    for run, label in zip(runs, labels):
      if not any(_has_points(run.metrics.get(n)) for n in validation):
        notes.append(f"{label}: no validation metric logged; not in the validation panels")
  specs += [("Semantic entropy", "nats", ["semantic_entropy"]),
            ("Token entropy", "nats", ["entropy_t1", "entropy"]),
            ("Response length", "tokens", ["response_length_mean"])]
  panels, data = [], []
  for title, ylabel, candidates in specs:
    lines, used, steps, values = [], {}, {}, {}
    for run, label in zip(runs, labels):
      name = next((n for n in candidates if _has_points(run.metrics.get(n))), None)
      if name is None:
        if not title.startswith("Validation"):
          rec.get(run, label, "/".join(candidates))  # records it as missing
        continue
      series = rec.get(run, label, name)
      smoothed = smooth(list(series.values), window)
      used[label], steps[label] = name, list(series.steps)
      values[label] = [json_number(v) for v in smoothed]
      lines.append(figures.Line(label, series.steps, smoothed))
    if len(set(used.values())) > 1:  # mixed metrics: say which one each curve is
      lines = [figures.Line(f"{line.name} [{used[line.name]}]", line.steps, line.values)
               for line in lines]
    shown = "/".join(dict.fromkeys(used.values())) or "/".join(candidates)
    if title.startswith("Validation"):
      full_title = title
    else:
      full_title = f"{title} ({shown})"
    panels.append(figures.Panel(full_title, ylabel, tuple(lines),
                                empty="not logged: " + " / ".join(candidates)))
    data.append({"title": full_title, "metric": used, "steps": steps, "values": values})
  return panels, data


def _fork_bars(runs: Sequence[RunData], labels: Sequence[str], rec: _Recorder, last: int,
               notes: list[str]) -> dict[str, dict[str, Any]]:
  bars = {}
  for run, label in zip(runs, labels):
    entry = {}
    for name in FORK_METRICS:
      series = rec.get(run, label, name, note=False)
      if series is None:
        continue
      mean, used = tail_mean(series.steps, series.values, last)
      entry[name] = {"mean": json_number(mean), "steps": used}
    if entry:
      bars[label] = entry
      missing = [n for n in FORK_METRICS if n not in entry]
      if missing:
        notes.append(f"{label}: not logged: {', '.join(missing)} (no bar in fork_overlap.png)")
    else:
      notes.append(f"{label}: no fork_* fractions logged; not in fork_overlap.png")
  return bars


def _run_summary(run: RunData, label: str) -> dict[str, Any]:
  steps = run.steps()
  return {"label": label, "label_source": run.label_source, "path": run.path,
          "steps": [steps[0], steps[-1]] if steps else [], "num_logged_steps": len(steps),
          "eval_files": list(run.eval_files), "num_samples": len(run.samples)}


def write_report(runs: Sequence[RunData], output: str, *, smooth_window: int = 1,
                 fork_last: int = 0, max_samples: int = 20,
                 title: str = "HICRA training report") -> dict[str, Any]:
  """Writes the report of `runs` into `output` (created if needed).

  Args:
    runs: loaded runs (`load_run`), in the order of the legend and table rows.
      Repeated labels get " #2", " #3" (with a note).
    output: the output folder.
    smooth_window: overlays show a trailing moving average over this many logged
      values of each run (1: raw values). Per-run figures are never smoothed.
    fork_last: fork bars average the last this many logged values of each
      fraction (0: all).
    max_samples: samples.html entries per run (0: all), evenly spaced over steps.
    title: the index page's title.

  Returns:
    The content of summary.json (also written there).
  """
  if not runs:
    raise ValueError("write_report needs at least one run")
  if isinstance(smooth_window, bool) or not isinstance(smooth_window, int) or smooth_window < 1:
    raise ValueError(f"smooth_window must be an int >= 1, got {smooth_window!r}")
  os.makedirs(output, exist_ok=True)
  labels = unique_labels([run.label for run in runs])
  notes: list[str] = []
  for run, label in zip(runs, labels):
    notes += [f"{label}: {note}" for note in run.notes]
    if label != run.label:
      notes.append(f"label {run.label!r} is used by several runs; {run.path} is {label!r}")
  spans = {label: run.steps() for run, label in zip(runs, labels)}
  if len({(s[0], s[-1]) if s else None for s in spans.values()}) > 1:
    notes.append("runs cover different steps (" + ", ".join(
        f"{label}: {s[0]}-{s[-1]}, {len(s)} logged" if s else f"{label}: none"
        for label, s in spans.items()) + "); each curve spans its own run's steps")

  rec = _Recorder()
  images: dict[str, bytes] = {}
  captions: dict[str, str] = {}
  run_summaries = []
  dynamics_html = []
  for run, label in zip(runs, labels):
    summary = _run_summary(run, label)
    panels, sources = dynamics_panels(run, label, rec, notes)
    name = f"{file_slug(label)}_dynamics.png"
    images[name] = figures.panel_figure(f"{label}: training dynamics (Fig. 3)", panels)
    captions[name] = f"{label}: training dynamics"
    dynamics_html.append(pages.figure_html(name, images[name], captions[name]))
    summary["dynamics"] = {"figure": name, **sources}
    run_summaries.append(summary)

  panels, overlay_data = overlay_panels(runs, labels, rec, smooth_window, notes)
  smoothing = (f", trailing mean over {smooth_window} logged values"
               if smooth_window > 1 else "")
  images["overlays.png"] = figures.panel_figure(
      f"Runs compared (Figs. 5-7){smoothing}", panels, ncols=2)
  captions["overlays.png"] = "Runs compared by algorithm" + smoothing
  overlay_html = [pages.figure_html("overlays.png", images["overlays.png"],
                                    captions["overlays.png"])]

  fork = _fork_bars(runs, labels, rec, fork_last, notes)
  fork_html = []
  window = f"last {fork_last} logged steps" if fork_last else "all logged steps"
  if fork:
    groups = {desc: [fork[label].get(metric, {}).get("mean") for label in fork]
              for metric, desc in FORK_METRICS.items()}
    groups = {k: [float("nan") if v is None else v for v in vals] for k, vals in groups.items()}
    images["fork_overlap.png"] = figures.bar_figure(
        f"Fork-token overlap (Figs. 9/10), mean over {window}", list(fork), groups,
        ylabel="fraction")
    captions["fork_overlap.png"] = f"Fork-token overlap, mean over {window}"
    fork_html.append(pages.figure_html("fork_overlap.png", images["fork_overlap.png"],
                                       captions["fork_overlap.png"]))
  else:
    fork_html.append("<p>No run logged fork_* fractions.</p>")

  judge: dict[str, Any] = {}
  judge_html = []
  for run, label, summary in zip(runs, labels, run_summaries):
    if run.judge is None:
      continue
    fractions = judge_fractions(run.judge["per_step"])
    judge_labels = run.judge.get("labels")
    fractions["labels"] = dict(judge_labels) if isinstance(judge_labels, dict) else {}
    judge[label] = fractions
    if not fractions["steps"]:
      notes.append(f"{label}: judge_summary.json has no step with judged failures; "
                   "no error-type figure")
      continue
    name = f"{file_slug(label)}_errors.png"
    images[name] = figures.bar_figure(
        f"{label}: types of errors in failed rollouts (Fig. 4)",
        [str(s) for s in fractions["steps"]],
        {"Planning & Strategy (C)": fractions["planning_strategy"],
         "Others (A+B+D)": fractions["others"]},
        ylabel="fraction of judged failures", xlabel="step")
    captions[name] = f"{label}: error types per step (unparsed verdicts left out)"
    judge_html.append(pages.figure_html(name, images[name], captions[name]))
    summary["errors_figure"] = name
  if not judge_html:
    judge_html.append("<p>No run has a usable judge_summary.json (written by "
                      "<code>hicra-jax judge</code>).</p>")

  table = None
  table_html = []
  if any(run.evals for run in runs):
    data = tables.table1_data([(label, run.evals) for run, label in zip(runs, labels)])
    markdown = tables.table1([(label, run.evals) for run, label in zip(runs, labels)])
    table = {**data, "markdown": markdown}
    for run, label in zip(runs, labels):
      if not run.evals:
        notes.append(f"{label}: no eval summary.json found; its Table 1 row is empty")
    with open(os.path.join(output, "table1.md"), "w", encoding="utf-8") as f:
      f.write(markdown)
    table_html = [tables.table1_html(data), "<pre>" + html.escape(markdown) + "</pre>"]
  else:
    notes.append("no run has an eval summary.json (`hicra-jax eval`); no table1.md")
    table_html = ["<p>No eval summary.json found in any run.</p>"]

  sample_runs = [(label, run.samples) for run, label in zip(runs, labels)]
  for run, label in zip(runs, labels):
    if not run.samples:
      notes.append(f"{label}: no samples.jsonl entries")
  with open(os.path.join(output, "samples.html"), "w", encoding="utf-8") as f:
    f.write(pages.samples_html(sample_runs, limit=max_samples))

  for label in labels:
    missing = rec.missing.get(label, [])
    if missing:
      notes.append(f"{label}: not logged: {', '.join(missing)} (left out of the figures)")

  for name, png in images.items():
    with open(os.path.join(output, name), "wb") as f:
      f.write(png)

  sections = [
      ("Training dynamics per run (Fig. 3)",
       "Planning tokens lie inside a Strategic Gram; all others are execution tokens. "
       "Relative perplexity is each class's perplexity divided by its value at the first "
       "logged step. Per-run figures are not smoothed.", dynamics_html),
      ("Runs compared (Figs. 5-7)",
       "Each curve is one run, labelled by its algorithm. "
       + (f"Smoothing: {SMOOTH_KIND}, window {smooth_window}." if smooth_window > 1
          else "Raw logged values (no smoothing)."), overlay_html),
      ("Fork tokens (Figs. 9, 10)",
       f"Fork tokens are the top-entropy tokens of a step. Bars are the mean over {window} "
       "of each run.", fork_html),
      ("Error types of failed rollouts (Fig. 4)",
       "Fractions of judged failures per step: (C) flawed high-level plan vs (A) unrelated, "
       "(B) low-level execution and (D) other; unparsed verdicts are left out.", judge_html),
      ("Table 1", "avg@k in % per benchmark (mean reward over k samples per problem).",
       table_html),
      ("Sample completions (Fig. 2)", "",
       ['<p><a href="samples.html">samples.html</a> (also below).</p>',
        "<details><summary>show samples</summary>",
        pages.samples_section(sample_runs, limit=max_samples, heading_level=3),
        "</details>"]),
  ]
  with open(os.path.join(output, "index.html"), "w", encoding="utf-8") as f:
    f.write(pages.index_html(title=title, runs=run_summaries, sections=sections, notes=notes))

  for summary in run_summaries:
    summary["metrics"] = rec.metrics.get(summary["label"], {})
  files = sorted([*images, "index.html", "samples.html", "summary.json"]
                 + (["table1.md"] if table is not None else []))
  result = {
      "version": SUMMARY_VERSION,
      "runs": run_summaries,
      "overlays": {"smooth": {"window": smooth_window, "kind": SMOOTH_KIND},
                   "panels": overlay_data},
      "fork": {"last": fork_last, "metrics": dict(FORK_METRICS), "runs": fork},
      "judge": judge,
      "table1": table,
      "figures": sorted(images),
      "files": files,
      "notes": notes,
  }
  with open(os.path.join(output, "summary.json"), "w", encoding="utf-8") as f:
    f.write(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
            + "\n")
  return result
