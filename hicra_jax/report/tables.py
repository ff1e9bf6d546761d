"""The paper's Table 1 from eval summaries: rows = runs, columns = benchmarks, avg@k in %.

avg@k (`hicra-jax eval`'s "avg_at_k") is the mean reward over the k samples of
each problem, averaged over problems: the paper's "Pass@1" averaged over k
samples (k = 32 on AIME24/25, 4 on AMC23, 1 otherwise).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from hicra_jax.report.series import is_finite

DELTA_LABEL = "HICRA - GRPO"


def table1_data(rows: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, Any]:
  """The numbers of Table 1.

  Args:
    rows: (run label, {benchmark name: eval summary entry}) per run, in row
      order; an entry's "avg_at_k" is a fraction and "display" its column title.

  Returns:
    {"columns": [{"name", "display"}, ...] (order of first appearance),
     "rows": [{"label", "values": {name: avg@k in % or None}}, ...],
     "delta": None, or {"label": "HICRA - GRPO", "hicra": label, "grpo": label,
     "values": {name: HICRA minus GRPO in percentage points (from unrounded
     values) or None}} when one run is labelled "hicra" and one "grpo" (any case;
     the first of each) and both have a result on some benchmark}.
  """
  columns: dict[str, str] = {}
  for _, evals in rows:
    for name, entry in evals.items():
      display = entry.get("display") if isinstance(entry, Mapping) else None
      columns.setdefault(name, display if isinstance(display, str) and display else name)
  out_rows = []
  for label, evals in rows:
    values = {}
    for name in columns:
      entry = evals.get(name)
      value = entry.get("avg_at_k") if isinstance(entry, Mapping) else None
      values[name] = 100.0 * value if is_finite(value) else None
    out_rows.append({"label": label, "values": values})
  by_lower: dict[str, dict[str, Any]] = {}
  for row in out_rows:
    by_lower.setdefault(row["label"].lower(), row)
  delta = None
  if "hicra" in by_lower and "grpo" in by_lower:
    h, g = by_lower["hicra"], by_lower["grpo"]
    delta = {"label": DELTA_LABEL, "hicra": h["label"], "grpo": g["label"],
             "values": {name: (h["values"][name] - g["values"][name]
                               if h["values"][name] is not None
                               and g["values"][name] is not None else None)
                        for name in columns}}
    if all(v is None for v in delta["values"].values()):
      delta = None  # no benchmark that both runs have
  return {"columns": [{"name": n, "display": d} for n, d in columns.items()],
          "rows": out_rows, "delta": delta}


def _pct(value: float | None) -> str:
  return "" if value is None else f"{value:.1f}"


def _signed(value: float | None) -> str:
  if value is None:
    return ""
  text = f"{value:+.1f}"
  return "+0.0" if text == "-0.0" else text


def _cells(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
  header = ["run"] + [c["display"] for c in data["columns"]]
  names = [c["name"] for c in data["columns"]]
  body = [[row["label"]] + [_pct(row["values"][n]) for n in names] for row in data["rows"]]
  if data["delta"] is not None:
    body.append([data["delta"]["label"]] + [_signed(data["delta"]["values"][n]) for n in names])
  return header, body


def _md_cell(text: str) -> str:
  return text.replace("|", "\\|")


def table1(rows: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> str:
  """Table 1 as markdown: a header row, one row per run (avg@k in %, one decimal; an empty
  cell where a run has no result) and, when runs labelled "hicra" and "grpo" exist, a
  "HICRA - GRPO" row (signed percentage points). Ends with a newline."""
  header, body = _cells(table1_data(rows))
  lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |",
           "|---|" + "---|" * (len(header) - 1)]
  lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
  return "\n".join(lines) + "\n"


def table1_html(data: Mapping[str, Any]) -> str:
  """The table of `table1_data` as an HTML <table> (escaped)."""
  header, body = _cells(data)
  out = ["<table class=\"table1\"><thead><tr>"
         + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr></thead><tbody>"]
  for i, row in enumerate(body):
    delta = data["delta"] is not None and i == len(body) - 1
    out.append(("<tr class=\"delta\">" if delta else "<tr>")
               + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
  out.append("</tbody></table>")
  return "".join(out)
