"""benchmarks/device_suite.py: the one-process accelerator suite (issue 17), run on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import device_suite as ds  # noqa: E402  pylint: disable=wrong-import-position

# Items that cannot run on a CPU, and why the suite must say so.
CPU_SKIPS = {
    ("update_mfu", "cudnn"): "not on GPU", ("update_mfu", "splash"): "not on TPU",
    ("attention_parity", "cudnn vs xla"): "not on GPU",
    ("attention_parity", "splash vs xla"): "not on TPU",
}
# Per section, the items cpu-small must measure and one number each must carry.
CPU_FIGURES = {
    "ceilings": {"bf16 matmul": "tflops", "copy": "gb_per_s"},
    "attention_parity": {"chunked vs xla": "max_abs_diff"},
    "update_mfu": {"xla": "mfu_vs_matmul", "chunked": "mfu_vs_matmul"},
    "sampler": {"b4 T=1.0": "roofline_fraction", "b16 T=1.0": "roofline_fraction",
                "b4 greedy": "tokens_per_s", "b16 greedy": "tokens_per_s"},
    "masks": {"16x512": "mask_counts_ms", "4x2048": "mask_counts_ms"},
    "rl_step": {"compile (forced)": "step_s", "forced": "update_mfu_vs_matmul",
                "ragged": "masks_fraction", "ragged refill": "rollout_tokens_per_s",
                "ragged calls": "rollout_tokens_per_s"},
    "sampler_scaling": {"b1 ctx32": "tokens_per_s", "b16 ctx32": "tokens_per_s",
                        "b4 ctx128": "roofline_fraction"},
}


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def test_published_peaks():
  assert ds.published_peak("NVIDIA H200") == 989e12
  assert ds.published_peak("NVIDIA H100 80GB HBM3") == 989e12
  assert ds.published_peak("NVIDIA H100 PCIe") == 756e12
  assert ds.published_peak("TPU v5 lite") == 197e12
  assert ds.published_peak("cpu") is None


def test_failing_section_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
  """Fake sections: one raises, the others still run; targets are ratios of what was measured."""
  def ceilings(s, p, items):
    s.matmul_rate, s.bandwidth = 1e12, 1e11
    items["bf16 matmul"] = {"tflops": 1.0}

  def broken(s, p, items):
    items["first"] = {"tokens_per_s": 1.0}
    raise RuntimeError("kernel exploded")

  def masks(s, p, items):
    items["16x512"] = {"mask_counts_ms": 2.5}

  def rl(s, p, items):
    items["forced"] = {"masks_fraction": 0.002, "update_mfu_vs_matmul": 0.2}

  fakes = {name: (lambda s, p, items: None) for name in ds.ORDER}
  fakes.update(ceilings=ceilings, sampler=broken, masks=masks, rl_step=rl)
  monkeypatch.setattr(ds, "SECTIONS", fakes)
  assert ds.main(["--preset", "cpu-small", "--out", str(tmp_path)]) == 0
  report = json.loads((tmp_path / "device_suite.json").read_text())
  sections = report["sections"]
  assert list(sections) == list(ds.ORDER) and report["finished"]
  assert sections["sampler"]["status"] == "error"
  assert "RuntimeError: kernel exploded" in sections["sampler"]["error"]
  assert sections["sampler"]["items"]["first"] == {"tokens_per_s": 1.0}  # kept
  assert all(sections[n]["status"] == "ok" for n in ds.ORDER if n != "sampler")
  t = report["targets"]
  assert set(t) == set(ds.TARGETS_DOC)
  assert t["masks_512x4096"]["ratio"] == pytest.approx(2.0) and t["masks_512x4096"]["met"]
  assert t["masks_share_rl_step"]["ratio"] == pytest.approx(5.0)
  assert t["rl_update_mfu"]["ratio"] == pytest.approx(0.5) and t["rl_update_mfu"]["met"] is False
  assert t["decode_roofline_b64"]["value"] is None and t["decode_roofline_b64"]["met"] is None
  md = (tmp_path / "device_suite.md").read_text()
  assert "kernel exploded" in md and "| masks_512x4096 | 2.5 | 5.0 | 2 | yes |" in md


def test_budget_skips_sections_with_a_note(tmp_path):
  assert ds.main(["--preset", "cpu-small", "--out", str(tmp_path), "--budget_s", "0",
                  "--sections", "masks"]) == 0
  sections = json.loads((tmp_path / "device_suite.json").read_text())["sections"]
  assert list(sections) == ["ceilings", "masks"]
  for entry in sections.values():
    assert entry["status"] == "skipped" and entry["skipped"].startswith("budget:")


def test_unknown_section_is_refused(tmp_path):
  with pytest.raises(SystemExit):
    ds.main(["--out", str(tmp_path), "--sections", "ceilings,warp_drive"])


@pytest.mark.slow
def test_cpu_small_runs_every_section(tmp_path):
  """The whole suite, as the device runs it, with cpu-small sizes (about 60-90 s on 2 cores)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
  env.pop("OUT", None)
  start = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "device_suite.py"), "--preset",
       "cpu-small", "--out", str(tmp_path)],
      env=env, capture_output=True, text=True, timeout=420, check=False)
  wall = time.perf_counter() - start
  print(proc.stdout[-6000:])
  print(f"cpu-small wall time: {wall:.1f} s")
  assert proc.returncode == 0, proc.stderr[-4000:]

  report = json.loads((tmp_path / "device_suite.json").read_text())
  assert report["finished"] and report["backend"] == "cpu" and report["jax"]
  assert report["preset"] == "cpu-small" and report["published_bf16_peak_tflops"] is None
  sections = report["sections"]
  assert list(sections) == list(ds.ORDER)
  for name, entry in sections.items():
    assert entry["status"] == "ok", (name, entry.get("error"), entry.get("traceback"))
    assert _positive(entry["wall_s"])
    for item, metrics in entry["items"].items():
      reason = metrics.get("skipped") or metrics.get("error")
      numbers = [v for v in metrics.values() if _positive(v)]
      assert reason or numbers, (name, item, metrics)
    for item, key in CPU_FIGURES[name].items():
      assert _positive(entry["items"][item][key]), (name, item, entry["items"][item])
  for (name, item), reason in CPU_SKIPS.items():
    assert sections[name]["items"][item] == {"skipped": reason}
  tunix = sections["sampler"]["notes"]["tunix"]
  for batch in (4, 16):
    row = sections["sampler"]["items"][f"tunix b{batch} greedy"]
    if tunix == "not installed":
      assert row == {"skipped": "tunix not installed"}
    else:  # installed: it ran the same workload
      assert _positive(row.get("tokens_per_s")) or "error" in row, row
  rl = sections["rl_step"]["items"]
  assert rl["forced"]["mean_length"] == 16 and rl["ragged"]["mean_length"] < 16
  assert rl["ragged refill"]["mean_length"] < 16 and rl["ragged calls"]["mean_length"] < 16
  assert _positive(sections["rl_step"]["notes"]["refill_speedup_rollout"])
  for key in ds.SPLIT:
    assert _positive(rl["forced"][key])
  assert sections["attention_parity"]["items"]["chunked vs xla"]["ok"] is True
  assert set(report["targets"]) == set(ds.TARGETS_DOC)
  assert _positive(report["targets"]["masks_512x4096"]["ratio"])

  md = (tmp_path / "device_suite.md").read_text()
  for name in ds.ORDER:
    assert f"### {name}: ok" in md
  assert "| decode_roofline_b64 |" in md and "not on GPU" in md
  # Printed as each section finished, in order (flushed; a timeout keeps what came before).
  positions = [proc.stdout.index(f"## {name}: ok") for name in ds.ORDER]
  assert positions == sorted(positions)
