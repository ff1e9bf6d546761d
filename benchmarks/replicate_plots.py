"""Figures of a replicate_small.py run: the paper's dynamics, one PNG per quantity.

  python benchmarks/replicate_small.py --plot runs/replicate_small --figures docs/replication

Reads <run>/<algorithm>/metrics.jsonl and <run>/eval.jsonl. Relative
perplexity follows the paper: exp(mean NLL) of planning / execution tokens
divided by its value at the first logged step. Thin lines are the per-step
values, thick ones a centred running mean over `SMOOTH` steps (geometric for
perplexity ratios, so one outlier step does not dominate). Planning-token
series skip the steps that had no planning token (the trainer logs 0 there).
"""

from __future__ import annotations

import json
import math
import os

SMOOTH = 5
COLORS = {"hicra": "tab:red", "grpo": "tab:blue", "entropy_reg": "tab:green"}
LABELS = {"hicra": "HICRA", "grpo": "GRPO", "entropy_reg": "Entropy reg."}


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def running_mean(values: list[float], window: int = SMOOTH) -> list[float]:
  """Centred running mean over the finite values; the window shrinks at both ends."""
  half = window // 2
  out = []
  for i in range(len(values)):
    part = [v for v in values[max(0, i - half):i + half + 1] if math.isfinite(v)]
    out.append(sum(part) / len(part) if part else math.nan)
  return out


def relative_perplexity(log_ppl: list[float]) -> list[float]:
  """exp(log_ppl_t - log_ppl_0): perplexity relative to the first step (NaN stays NaN)."""
  return [math.exp(v - log_ppl[0]) for v in log_ppl]


def planning_values(rows: list[dict], key: str) -> list[float]:
  """rows[key], NaN at steps without planning tokens (the trainer logs 0 there)."""
  return [r[key] if r["planning_token_ratio"] > 0 else math.nan for r in rows]


# (file stem, title, y label, {series label suffix: function(metrics rows) -> values})
PANELS = (
    ("accuracy", "Training accuracy (reward >= 1)", "accuracy",
     {"": lambda rows: [r["accuracy"] for r in rows]}),
    ("semantic_entropy", "Semantic entropy of Strategic Grams", "nats",
     {"": lambda rows: [r["semantic_entropy"] for r in rows]}),
    ("token_entropy", "Token entropy by class", "nats",
     {" planning": lambda rows: planning_values(rows, "entropy_planning"),
      " execution": lambda rows: [r["entropy_execution"] for r in rows]}),
    ("relative_perplexity", "Relative perplexity by class (log scale)",
     "perplexity / step-1 perplexity",
     {" planning": lambda rows: relative_perplexity(planning_values(rows, "log_ppl_planning")),
      " execution": lambda rows: relative_perplexity([r["log_ppl_execution"] for r in rows])}),
    ("response_length", "Mean response length", "tokens",
     {"": lambda rows: [r["response_length_mean"] for r in rows]}),
    ("planning_token_ratio", "Share of completion tokens inside a Strategic Gram", "fraction",
     {"": lambda rows: [r["planning_token_ratio"] for r in rows]}),
)


def plot_run(run_dir: str, figures_dir: str) -> list[str]:
  """Writes one PNG per panel of PANELS into figures_dir; returns their paths."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  runs = {}
  for name in COLORS:
    path = os.path.join(run_dir, name, "metrics.jsonl")
    if os.path.exists(path):
      runs[name] = sorted(read_jsonl(path), key=lambda r: r["step"])
  if not runs:
    raise FileNotFoundError(f"no <algorithm>/metrics.jsonl under {run_dir!r}")
  evals = []
  if os.path.exists(os.path.join(run_dir, "eval.jsonl")):
    evals = read_jsonl(os.path.join(run_dir, "eval.jsonl"))
  os.makedirs(figures_dir, exist_ok=True)
  written = []
  for stem, title, ylabel, series in PANELS:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, rows in runs.items():
      steps = [r["step"] for r in rows]
      for suffix, fn in series.items():
        values = fn(rows)
        style = "--" if suffix == " execution" else "-"
        ax.plot(steps, values, style, color=COLORS[name], alpha=0.25, linewidth=1)
        if stem == "relative_perplexity":  # a geometric running mean: ratios, outliers
          smooth = [math.exp(v) for v in running_mean([math.log(v) for v in values])]
        else:
          smooth = running_mean(values)
        ax.plot(steps, smooth, style, color=COLORS[name], linewidth=2, label=LABELS[name] + suffix)
    if stem == "relative_perplexity":
      ax.set_yscale("log")
    if stem == "accuracy":
      for ev in evals:
        name = ev["algorithm"]
        color = COLORS.get(name, "black")
        ax.scatter([ev["step"]], [ev["eval_accuracy"]], marker="*", s=120, color=color,
                   zorder=3, label=f"held-out eval ({LABELS.get(name, name)})")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(figures_dir, f"{stem}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written
