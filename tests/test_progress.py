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
