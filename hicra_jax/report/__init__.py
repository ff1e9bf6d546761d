"""Reports of training runs: the paper's figures, Table 1 and sample pages (`hicra-jax report`).

  runs = [load_run("runs/hicra"), load_run("runs/grpo")]
  summary = write_report(runs, "report", smooth_window=5)

What the numbers are (all read from a run's metrics.jsonl unless said otherwise):

  relative perplexity   rel_ppl_{planning,execution} when logged, else
                        `relative_perplexity(steps, log_ppl_*)`:
                        exp(log_ppl_t - log_ppl at the first logged step), the
                        perplexity of that token class divided by its initial value
  token entropy         entropy_t1_{planning,execution}: next-token entropy of the raw
                        policy (temperature 1), mean over tokens of the class; when not
                        logged, entropy_{planning,execution} at the sampling temperature
  semantic entropy      Shannon entropy (nats) of the frequency distribution of the
                        Strategic Grams used in a step's rollouts
  conditional entropy   sg_conditional_entropy: entropy of the procedural n-grams that
                        follow a Strategic Gram
  accuracy, length      accuracy (share of rollouts with reward >= 1),
                        response_length_mean (tokens)
  validation accuracy   eval_accuracy and eval_<benchmark>_avg_at_k (eval steps only)
  fork overlap          fork_top_entropy_planning_fraction (share of the top-q entropy
                        tokens that are planning tokens) and
                        fork_planning_top_entropy_fraction (share of planning tokens
                        among the top-q entropy tokens), averaged over a run's last K
                        logged steps (all by default)
  Table 1               avg@k in % from `hicra-jax eval` summary.json files
  error types           judge_summary.json (`hicra-jax judge`): per step C / (A+B+C+D)
                        "Planning & Strategy" vs (A+B+D) / (A+B+C+D) "Others"

This package imports matplotlib (Agg canvas, no pyplot) and never jax.
"""

from hicra_jax.report.build import file_slug, write_report
from hicra_jax.report.figures import Line, Panel, bar_figure, panel_figure
from hicra_jax.report.pages import highlight, locate_spans, samples_html
from hicra_jax.report.runs import (RunData, Series, load_run, parse_scalar, read_metrics,
                                   run_label)
from hicra_jax.report.series import judge_fractions, relative_perplexity, smooth, tail_mean
from hicra_jax.report.tables import table1, table1_data

__all__ = [
    "Line", "Panel", "RunData", "Series", "bar_figure", "file_slug", "highlight",
    "judge_fractions", "load_run", "locate_spans", "panel_figure", "parse_scalar",
    "read_metrics", "relative_perplexity", "run_label", "samples_html", "smooth",
    "table1", "table1_data", "tail_mean", "write_report",
]
