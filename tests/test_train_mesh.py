"""The trainer on a 4-device mesh (data 2 x fsdp 2) matches the one-device run (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_mesh_training_matches_one_device():
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_mesh_check.py")
  result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "MESH OK" in result.stdout
