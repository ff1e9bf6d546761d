"""The trainer's progress display: a tqdm bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from hicra_jax.train.metrics import Progress


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_on_a_terminal_and_lines_otherwise():
  m = {"reward_mean": 0.5, "accuracy": 0.25, "time_step_s": 2.0}
  tty, plain = _Tty(), io.StringIO()
  for stream in (tty, plain):
    progress = Progress(4, 0, stream)
    progress.update(2, m)
    progress.update(4, m)
  frames = tty.getvalue().split("\r")
  assert any(" 2/4 " in f and "reward 0.500 acc 0.250" in f for f in frames), frames
  assert " 4/4 " in frames[-1] and "100%" in frames[-1] and tty.getvalue().endswith("\n")
  lines = plain.getvalue().splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("step 2/4 reward 0.500 acc 0.250") and "eta" in lines[0]
  assert lines[1].startswith("step 4/4 reward 0.500")


def test_a_resumed_run_starts_the_bar_at_its_step():
  tty = _Tty()
  progress = Progress(10, 6, tty)
  progress.update(7, {})
  assert " 7/10 " in tty.getvalue().split("\r")[-1]


# ---- in a Jupyter kernel (the notebooks' case) ------------------------------------

_PROGRESS_CELL = """
from hicra_jax.train.metrics import Progress
progress = Progress(3)
for step in (1, 2, 3):
  progress.update(step, {"reward_mean": 0.5, "accuracy": 0.25, "time_step_s": 2.0})
"""


def _run_in_kernel(tmp_path, *cells):
  import notebook_helpers  # pylint: disable=import-outside-toplevel
  nb = notebook_helpers.execute(notebook_helpers.code_notebook(*cells), str(tmp_path), timeout=120)
  return nb, nb.cells[-1].outputs


def _lines_and_stderr(outputs):
  stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
  stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
  return stdout.splitlines(), stderr


def test_in_a_notebook_a_widget_bar_and_a_line_per_step(tmp_path):
  nb, outputs = _run_in_kernel(tmp_path, _PROGRESS_CELL)
  widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
  assert len(widgets) == 1, outputs
  lines, stderr = _lines_and_stderr(outputs)
  assert [l.split(" reward")[0] for l in lines] == ["step 1/3", "step 2/3", "step 3/3"], lines
  assert "reward 0.500 acc 0.250" in lines[0] and stderr == ""  # no tqdm warning
  # The widget's final state (saved by the kernel client): a full bar carrying the metrics.
  state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
  bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
  assert [(b["value"], b["max"]) for b in bars] == [(3, 3)], bars
  texts = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
  assert any("3/3" in t and "reward\u20070.500\u2007acc\u20070.250" in t for t in texts), texts


def test_in_a_notebook_without_ipywidgets_lines_only(tmp_path):
  _, outputs = _run_in_kernel(tmp_path, "import sys; sys.modules['ipywidgets'] = None",
                              _PROGRESS_CELL)
  assert all(o.output_type == "stream" for o in outputs), outputs
  lines, stderr = _lines_and_stderr(outputs)
  assert len(lines) == 3 and lines[2].startswith("step 3/3 reward 0.500 acc 0.250"), lines
  assert stderr == "", stderr  # tqdm's "IProgress not found" warning is not shown
