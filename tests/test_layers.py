"""Imports run one way (DESIGN.md): the import-linter contracts hold, and no two modules
of hicra_jax import each other, directly or through others, function-local imports included."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "hicra_jax"


def test_import_contracts_hold():
  """`lint-imports` (pyproject.toml's [tool.importlinter]): layers, independence, no cycles."""
  lint_imports = pathlib.Path(sys.executable).parent / "lint-imports"
  assert lint_imports.is_file(), (
      f"{lint_imports} is missing: install the test extra (pip install -e '.[test]')")
  # --no-cache: no .import_linter_cache folder is written into the checkout.
  proc = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]


# ---- file-level import cycles, from the source (every import statement counts) --------


def module_names(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
  """{dotted module name: source file} of a package's .py files (a package is its __init__)."""
  names = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    names[".".join(parts)] = path
  return names


def imported_modules(name: str, path: pathlib.Path, modules: set[str]) -> set[str]:
  """The modules of `modules` that `path` imports anywhere: at the top, in a function, in an
  `if`. `from p import x` names module p.x when there is one, else p."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    targets = []
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the module's own package upwards
        package = name.split(".") if is_package else name.split(".")[:-1]
        parent = package[:len(package) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    for target in targets:
      while target and target not in modules:  # `import a.b.c` of a name inside a.b
        target = target.rpartition(".")[0]
      if target and target != name:
        found.add(target)
  return found


def import_graph(root: pathlib.Path, package: str) -> dict[str, set[str]]:
  """module -> the package's modules it imports."""
  paths = module_names(root, package)
  return {name: imported_modules(name, path, set(paths)) for name, path in paths.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle [a, b, ..., a] per strongly connected component of more than one module."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  components = []

  def connect(v: str) -> None:  # Tarjan's algorithm; the graph is small
    index[v] = low[v] = len(index)
    stack.append(v)
    for w in sorted(graph[v]):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
      if len(component) > 1:
        components.append(set(component))

  for v in sorted(graph):
    if v not in index:
      connect(v)
  cycles = []
  for component in components:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth-first inside the component, back to start
      v = frontier.pop(0)
      for w in sorted(graph[v] & component):
        if w == start:
          cycles.append(paths[v] + [start])
          frontier = []
          break
        if w not in paths:
          paths[w] = paths[v] + [w]
          frontier.append(w)
  return sorted(cycles)


def test_no_import_cycle_between_modules():
  cycles = import_cycles(import_graph(ROOT, PACKAGE))
  assert not cycles, "import cycles between modules:\n" + "\n".join(
      " -> ".join(cycle) for cycle in cycles)


def test_cycle_check_counts_function_local_imports(tmp_path):
  (tmp_path / "pkg" / "sub").mkdir(parents=True)
  (tmp_path / "pkg" / "__init__.py").write_text("")
  (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from pkg.sub.c import C\n")
  (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
  (tmp_path / "pkg" / "b.py").write_text("def f():\n  from . import a\n  return a\n")
  (tmp_path / "pkg" / "sub" / "c.py").write_text(
      "import os\nC = 1\nif os:\n  import pkg.a.nothing_here\n")
  graph = import_graph(tmp_path, "pkg")
  assert graph["pkg.b"] == {"pkg.a"}
  assert graph["pkg.sub.c"] == {"pkg.a"}
  assert graph["pkg.sub"] == {"pkg.sub.c"}
  assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
