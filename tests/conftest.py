"""Shared pytest setup: offline Hugging Face, hypothesis profiles fit for JIT."""

from __future__ import annotations

import os

# Before anything imports transformers / huggingface_hub: tests never touch the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from hypothesis import HealthCheck, settings  # pylint: disable=g-import-not-at-top,wrong-import-position

# JIT compiles make the first examples slow: no per-example deadline. In CI the
# examples are derandomized so a run is reproducible.
settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
