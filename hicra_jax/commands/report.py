"""`hicra-jax report`: figures, Table 1 and sample pages from training runs.

  hicra-jax report runs/hicra runs/grpo --config.output=report
  hicra-jax report --config.runs=runs/hicra,runs/grpo --config.labels=hicra,grpo \\
      --config.smooth=5 --config.output=report

Run directories are given as positional arguments, as the comma-separated
`runs` field, or both (the field's first). Each must hold a metrics.jsonl. The
output folder gets per-run training-dynamics figures (the paper's Fig. 3),
overlays of the runs (Figs. 5-7), fork-token bars (Figs. 9/10), error types
(Fig. 4, from judge_summary.json), table1.md (from eval summary.json files),
samples.html, a self-contained index.html and summary.json with every plotted
number. Nothing here imports jax.
"""

from __future__ import annotations

import dataclasses
import os

from hicra_jax import config as config_lib
from hicra_jax import typed_config

HELP = "figures, Table 1 and sample pages from training runs (the paper's Figs. 2-7, 9, 10)"
METRICS_FILE = "metrics.jsonl"  # = hicra_jax.report.runs.METRICS_FILE (not imported: matplotlib)


def split_list(text: str) -> list[str]:
  """The non-empty, stripped items of a comma-separated string."""
  return [item.strip() for item in text.split(",") if item.strip()]


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """`hicra-jax report RUN [RUN ...]`: the runs, where the report goes, and how it is drawn."""

  # run workdirs (each with metrics.jsonl), comma-separated; positional RUN
  # arguments are added after them.
  runs: str = ""
  # output folder: PNG figures, table1.md, samples.html, index.html, summary.json.
  output: str = "report"
  # one label per run, comma-separated ("": each run's config.json "algorithm",
  # else its folder name).
  labels: str = ""
  # overlays: trailing moving average over this many logged values of each run (1: raw).
  smooth: int = 1
  fork_last: int = 0  # fork-overlap bars: mean over each run's last this many logged steps (0: all)
  max_samples: int = 20  # samples.html: completions per run, evenly spaced over the steps (0: all)

  def __post_init__(self):
    check = typed_config.FieldChecker(self)
    check.string("runs", empty=True)
    check.string("output")
    check.string("labels", empty=True)
    check.integer("smooth", minimum=1)
    check.integer("fork_last", minimum=0)
    check.integer("max_samples", minimum=0)
    runs, labels = split_list(self.runs), split_list(self.labels)
    if labels and len(labels) != len(runs):
      raise check.error("labels", f"one label per run ({len(runs)} run(s): {runs!r})")
    for run in runs:
      path = os.path.expanduser(run)
      if not os.path.isfile(os.path.join(path, METRICS_FILE)):
        why = "has no metrics.jsonl" if os.path.isdir(path) else "is not a directory"
        raise config_lib.ConfigError(
            f"config field 'runs': run directory {run!r} {why}; expected `hicra-jax train` "
            f"workdirs containing {METRICS_FILE}", field="runs", value=run,
            expected=f"a directory containing {METRICS_FILE}")


SCHEMA = ReportConfig


def get_config() -> config_lib.ConfigDict:
  """The embedded default config of `report`."""
  return typed_config.to_config_dict(ReportConfig())


def validate(config: config_lib.ConfigDict) -> ReportConfig:
  """The typed config; every run directory must hold a metrics.jsonl (no run needed yet:
  the embedded default has none, and `run` asks for them)."""
  return typed_config.from_mapping(ReportConfig, config)


def run(config: ReportConfig) -> int:
  """Loads the runs, writes the report, prints where it is and its notes."""
  # Imported here: keeps `hicra-jax --help` and the other commands from importing matplotlib.
  from hicra_jax import report  # pylint: disable=import-outside-toplevel
  paths = split_list(config.runs)
  if not paths:
    raise config_lib.ConfigError(
        "no runs given: hicra-jax report RUN [RUN ...] --config.output=DIR, or "
        "--config.runs=dir1,dir2", field="runs", value=config.runs)
  labels = split_list(config.labels) or [None] * len(paths)
  runs = [report.load_run(path, label) for path, label in zip(paths, labels)]
  output = os.path.expanduser(config.output)
  summary = report.write_report(runs, output, smooth_window=config.smooth,
                                fork_last=config.fork_last, max_samples=config.max_samples)
  for note in summary["notes"]:
    print(f"note: {note}")
  print(f"wrote {len(summary['files'])} files to {output}: " + ", ".join(summary["files"]))
  print(f"open {os.path.join(output, 'index.html')}")
  return 0
