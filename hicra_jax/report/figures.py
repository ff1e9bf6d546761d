"""PNG figures from plain data: grids of line panels (optionally with a twin y axis) and
grouped bar charts.

Figures are drawn with `matplotlib.figure.Figure` on an Agg canvas directly, so
pyplot's global backend and figure registry are never touched. Output is
deterministic for a given matplotlib version (no timestamp in the PNG).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DPI = 100
_MARKER_MAX_POINTS = 60  # lines with at most this many points also get markers


@dataclasses.dataclass(frozen=True)
class Line:
  """One curve: `values[i]` at `steps[i]`; NaN or inf leaves a gap."""

  name: str
  steps: Sequence[int]
  values: Sequence[float]


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axes: lines on the left y axis and, optionally, lines on a twin right axis.

  A panel whose lines have no finite point shows `empty` in its middle.
  """

  title: str
  ylabel: str = ""
  lines: tuple[Line, ...] = ()
  right_ylabel: str = ""
  right_lines: tuple[Line, ...] = ()
  xlabel: str = "step"
  empty: str = "not logged"


def png_bytes(fig: Figure) -> bytes:
  """The figure as PNG bytes (no "Software" or time metadata: reproducible)."""
  buf = io.BytesIO()
  FigureCanvasAgg(fig)
  fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
  return buf.getvalue()


def _text(text: str) -> str:
  """Text shown as is: "$" would start mathtext, a leading "_" hides a legend entry."""
  text = str(text).replace("$", r"\$")
  return " " + text if text.startswith("_") else text


def _finite(values: Sequence[float]) -> list[float]:
  return [float(v) if math.isfinite(v) else math.nan for v in values]


def _has_points(lines: Sequence[Line]) -> bool:
  return any(math.isfinite(v) for line in lines for v in line.values)


def _draw_lines(ax, lines: Sequence[Line], colors, *, dashed: bool = False) -> list:
  handles = []
  for line in lines:
    style = dict(color=next(colors), linewidth=1.5, linestyle="--" if dashed else "-")
    if len(line.steps) <= _MARKER_MAX_POINTS:
      style.update(marker="o", markersize=3)
    (handle,) = ax.plot(list(line.steps), _finite(line.values), label=_text(line.name), **style)
    handles.append(handle)
  return handles


def _draw_panel(ax, panel: Panel) -> None:
  colors = iter([f"C{i % 10}" for i in range(len(panel.lines) + len(panel.right_lines))])
  ax.set_title(_text(panel.title), fontsize=10, wrap=True)
  ax.set_xlabel(_text(panel.xlabel))
  if panel.ylabel:
    ax.set_ylabel(_text(panel.ylabel))
  ax.grid(True, alpha=0.3)
  if not _has_points(panel.lines) and not _has_points(panel.right_lines):
    ax.text(0.5, 0.5, _text(panel.empty), ha="center", va="center", transform=ax.transAxes,
            fontsize=9, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    return
  handles = _draw_lines(ax, panel.lines, colors)
  top = ax
  if panel.right_lines:
    top = ax.twinx()  # drawn over `ax`: the legend goes there to stay visible
    if panel.right_ylabel:
      top.set_ylabel(_text(panel.right_ylabel))
    handles += _draw_lines(top, panel.right_lines, colors, dashed=True)
  if handles:
    top.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=8,
               loc="best")


def panel_figure(title: str, panels: Sequence[Panel], *, ncols: int = 2) -> bytes:
  """A grid of line panels (row-major, `ncols` per row) as PNG bytes."""
  if not panels:
    raise ValueError("panel_figure needs at least one panel")
  ncols = max(1, min(ncols, len(panels)))
  nrows = math.ceil(len(panels) / ncols)
  fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows + 0.4), layout="constrained")
  fig.suptitle(_text(title), fontsize=12)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i < len(panels):
      _draw_panel(ax, panels[i])
    else:
      ax.set_visible(False)
  return png_bytes(fig)


def bar_figure(title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]],
               *, ylabel: str = "", xlabel: str = "", ylim: tuple[float, float] | None = (0, 1),
               value_format: str = "{:.2f}") -> bytes:
  """Grouped bars: for each category (x), one bar per group, labelled with its value.

  `groups` maps a group name (legend entry) to one value per category; NaN
  draws no bar.
  """
  if not categories:
    raise ValueError("bar_figure needs at least one category")
  n = max(1, len(groups))
  width = 0.8 / n
  fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * len(categories) * max(1, n) * 0.6), 3.8),
               layout="constrained")
  ax = fig.subplots()
  ax.set_title(_text(title), fontsize=11)
  for i, (name, values) in enumerate(groups.items()):
    xs = [j + (i - (n - 1) / 2) * width for j in range(len(categories))]
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(xs, heights, width=width, label=_text(name), color=f"C{i % 10}")
    ax.bar_label(bars, labels=[value_format.format(v) if math.isfinite(v) else ""
                               for v in values], fontsize=7, padding=1)
  ax.set_xticks(range(len(categories)), [_text(c) for c in categories],
                rotation=30 if len(categories) > 6 else 0)
  if xlabel:
    ax.set_xlabel(_text(xlabel))
  if ylabel:
    ax.set_ylabel(_text(ylabel))
  if ylim is not None:
    ax.set_ylim(ylim[0], ylim[1] * 1.3)  # room for the legend above the bars
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize=8, loc="upper left")
  return png_bytes(fig)
