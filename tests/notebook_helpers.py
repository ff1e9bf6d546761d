"""Running notebooks in a Jupyter kernel of this interpreter (tests/test_notebooks.py,
tests/test_progress.py).

The kernel is started from a kernelspec written for the test, whose command is this
process's own interpreter (`sys.executable`: the venv's python under `make test`),
so a `python3` kernelspec installed elsewhere on the machine is never picked.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Iterator

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

KERNEL_NAME = "hicra-jax-tests"


def _kernel_manager(spec_root: str) -> AsyncKernelManager:
  spec_dir = os.path.join(spec_root, KERNEL_NAME)
  os.makedirs(spec_dir, exist_ok=True)
  with open(os.path.join(spec_dir, "kernel.json"), "w", encoding="utf-8") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "hicra-jax tests", "language": "python"}, f)
  specs = KernelSpecManager(kernel_dirs=[spec_root], ensure_native_kernel=False)
  return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, cwd: str, *, timeout: int = 600) -> nbformat.NotebookNode:
  """Runs every cell of `nb` (in place) in a fresh kernel whose working directory is `cwd`.

  Raises nbclient's CellExecutionError, naming the cell and the error, at the first cell
  that raises. Returns `nb`, with its outputs.
  """
  with tempfile.TemporaryDirectory() as spec_root:
    client = NotebookClient(nb, km=_kernel_manager(spec_root), timeout=timeout,
                            resources={"metadata": {"path": cwd}})
    client.execute(cleanup_kc=True)  # shut the kernel down, even after a failing cell
  return nb


def code_notebook(*sources: str) -> nbformat.NotebookNode:
  """A notebook of code cells."""
  return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def outputs(nb: nbformat.NotebookNode) -> Iterator[tuple[int, dict[str, Any]]]:
  """(cell index, output) for every output of every code cell."""
  for i, cell in enumerate(nb.cells):
    for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
      yield i, output


def stream_text(nb: nbformat.NotebookNode, cell: int, name: str = "stdout") -> str:
  """The text a cell wrote to stdout (or stderr), all stream outputs joined."""
  return "".join(o.get("text", "") for o in nb.cells[cell].get("outputs", [])
                 if o.get("output_type") == "stream" and o.get("name") == name)
