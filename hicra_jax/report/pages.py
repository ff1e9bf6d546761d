"""HTML: sample completions with their planning spans highlighted (the paper's Fig. 2), and
the self-contained index page (every figure inline as a base64 data URI).

Every piece of run content (prompts, completions, labels, notes) is escaped
with `html.escape`; a completion containing `<script>` shows as text.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1, h2, h3 { font-weight: 600; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f7f7f7; padding: .6em;
      border-radius: 4px; font-size: 13px; }
mark.plan { background: #ffd866; border-bottom: 2px solid #e0a800; padding: 0 1px; }
.meta { color: #555; font-size: 13px; margin: .8em 0 .2em; }
.sample { border-top: 1px solid #ddd; padding-top: .4em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.delta td { font-weight: 600; background: #f3f8ff; }
.notes li { margin: .2em 0; }
"""


# ---- locating planning spans ------------------------------------------------------


def _overlaps(start: int, end: int, ranges: Sequence[tuple[int, int]]) -> bool:
  return any(start < e and s < end for s, e in ranges)


def _find(seq: Sequence[Any], span: Sequence[Any], start: int) -> int:
  """Index of the first occurrence of `span` in `seq` at or after `start` (-1: none)."""
  if isinstance(seq, str):
    return seq.find(span, start)
  n = len(span)
  for i in range(start, len(seq) - n + 1):
    if list(seq[i:i + n]) == list(span):
      return i
  return -1


def locate_spans(sequence: str | Sequence[int], spans: Sequence[Any]
                 ) -> tuple[list[tuple[int, int]], int]:
  """Where each planning span occurs in a completion.

  samples.jsonl lists a completion's planning spans (runs of planning tokens) in
  order of appearance, as text or as token-id lists. Each is matched to its
  next occurrence after the previous match; when there is none (a decoded piece
  can differ from the same piece of the decoded whole), to its first occurrence
  anywhere that does not overlap an earlier match.

  Args:
    sequence: the completion text, or its token ids.
    spans: the planning spans, texts (for a text) or id lists (for ids).

  Returns:
    (sorted, non-overlapping [start, end) ranges in `sequence`, number of spans
    not found). Empty spans are ignored.
  """
  ranges: list[tuple[int, int]] = []
  cursor, missing = 0, 0
  for span in spans:
    if isinstance(sequence, str) and not isinstance(span, str):
      missing += 1
      continue
    if not span:
      continue
    i = _find(sequence, span, cursor)
    if i >= 0:
      cursor = i + len(span)
    else:
      i = _find(sequence, span, 0)
      while i >= 0 and _overlaps(i, i + len(span), ranges):
        i = _find(sequence, span, i + 1)
    if i < 0:
      missing += 1
      continue
    ranges.append((i, i + len(span)))
  ranges.sort()
  return ranges, missing


def highlight(sequence: str | Sequence[int], ranges: Sequence[tuple[int, int]]) -> str:
  """Escaped HTML of a completion with each range wrapped in <mark class="plan">.

  Token ids (a sequence of ints) are shown as space-separated numbers.
  """
  if isinstance(sequence, str):
    out, pos = [], 0
    for start, end in sorted(ranges):
      start = max(start, pos)
      if end <= start:
        continue
      out.append(html.escape(sequence[pos:start]))
      out.append('<mark class="plan">' + html.escape(sequence[start:end]) + "</mark>")
      pos = end
    out.append(html.escape(sequence[pos:]))
    return "".join(out)
  tokens = [html.escape(str(x)) for x in sequence]
  words, pos = [], 0
  for start, end in sorted(ranges):
    start = max(start, pos)
    if end <= start:
      continue
    words += tokens[pos:start]
    words.append('<mark class="plan">' + " ".join(tokens[start:end]) + "</mark>")
    pos = end
  words += tokens[pos:]
  return " ".join(words)


# ---- samples ----------------------------------------------------------------------


def pick_samples(samples: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
  """At most `limit` entries (0: all), evenly spaced over the log in step order, so the
  first and the last logged steps are both shown."""
  ordered = sorted(samples, key=lambda s: (s.get("step") if isinstance(s.get("step"), int)
                                           else -1))
  if not limit or len(ordered) <= limit:
    return ordered
  if limit == 1:
    return [ordered[-1]]
  picks = sorted({round(i * (len(ordered) - 1) / (limit - 1)) for i in range(limit)})
  return [ordered[i] for i in picks]


def _sample_html(sample: Mapping[str, Any]) -> tuple[str, int]:
  """(HTML of one entry, spans not found)."""
  text = sample.get("completion")
  if not isinstance(text, str):
    ids = sample.get("completion_ids")
    text = [x for x in ids if isinstance(x, int)] if isinstance(ids, list) else ""
  spans = sample.get("planning_spans")
  spans = spans if isinstance(spans, list) else []
  ranges, missing = locate_spans(text, spans)
  meta = [f"step {sample.get('step')}", f"example {sample.get('example_id')}",
          f"reward {sample.get('reward')}", f"{len(spans)} planning span(s)"]
  if missing:
    meta.append(f"{missing} not found in the text")
  if not isinstance(text, str):
    meta.append("token ids (the run had no tokenizer)")
  prompt = sample.get("prompt")
  if not isinstance(prompt, str):
    ids = sample.get("prompt_ids")
    prompt = " ".join(str(x) for x in ids) if isinstance(ids, list) else ""
  parts = ['<div class="sample">',
           '<p class="meta">' + html.escape(" · ".join(meta)) + "</p>"]
  if prompt:
    parts.append("<details><summary>prompt</summary><pre>" + html.escape(prompt)
                 + "</pre></details>")
  parts += ['<pre class="completion">' + highlight(text, ranges) + "</pre>", "</div>"]
  return "\n".join(parts), missing


def samples_section(runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
                    limit: int = 20, heading_level: int = 2) -> str:
  """The body of the samples page: per run a heading and its picked entries
  (`pick_samples`), or a line saying it has none."""
  h = f"h{heading_level}"
  out = []
  for label, samples in runs:
    out.append(f"<section class=\"run\"><{h}>{html.escape(label)}</{h}>")
    picked = pick_samples(samples, limit)
    if not picked:
      out.append("<p>No samples.jsonl entries.</p>")
    elif len(picked) < len(samples):
      out.append(f"<p>{len(picked)} of {len(samples)} entries, evenly spaced over the "
                 "steps.</p>")
    out += [_sample_html(s)[0] for s in picked]
    out.append("</section>")
  return "\n".join(out)


def samples_html(runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
                 limit: int = 20, title: str = "Sample completions") -> str:
  """A standalone HTML page of sample completions, planning spans highlighted.

  Args:
    runs: (label, samples.jsonl entries) per run.
    limit: entries shown per run (0: all), evenly spaced over the steps.
    title: the page title.
  """
  return "\n".join([
      "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
      f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
      f"<h1>{html.escape(title)}</h1>",
      "<p>Planning tokens (tokens inside an occurrence of a Strategic Gram) are "
      '<mark class="plan">highlighted</mark>; everything else is execution.</p>',
      samples_section(runs, limit=limit), "</body></html>", ""])


# ---- index ------------------------------------------------------------------------


def data_uri(png: bytes) -> str:
  """A PNG as a base64 data URI."""
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(name: str, png: bytes, caption: str) -> str:
  """An inline <figure>: the PNG as a data URI; `name` (its file) as alt and data-file."""
  return (f'<figure><img src="{data_uri(png)}" alt="{html.escape(name)}" '
          f'data-file="{html.escape(name)}"><figcaption>{html.escape(caption)} '
          f"(<code>{html.escape(name)}</code>)</figcaption></figure>")


def index_html(*, title: str, runs: Sequence[Mapping[str, Any]],
               sections: Sequence[tuple[str, str, Sequence[str]]],
               notes: Sequence[str]) -> str:
  """The self-contained report page.

  Args:
    title: page title.
    runs: {"label", "path", "label_source", "steps", "num_logged_steps"} per run.
    sections: (heading, intro text, [HTML fragments]) in page order; fragments are
      inserted as they are (already escaped: `figure_html`, tables, samples).
    notes: plain-text notes (escaped here).
  """
  out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
         f"<h1>{html.escape(title)}</h1>", "<h2>Runs</h2>",
         "<table><thead><tr><th>label</th><th>label from</th><th>workdir</th>"
         "<th>steps</th><th>logged steps</th></tr></thead><tbody>"]
  for run in runs:
    steps = run.get("steps") or []
    span = f"{steps[0]}-{steps[1]}" if len(steps) == 2 else "none"
    out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
        run["label"], run["label_source"], run["path"], span, run["num_logged_steps"]))
               + "</tr>")
  out.append("</tbody></table>")
  out.append("<h2>Notes</h2>")
  if notes:
    out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
               + "</ul>")
  else:
    out.append("<p>None: every run logged every metric the report uses.</p>")
  for heading, intro, fragments in sections:
    out.append(f"<h2>{html.escape(heading)}</h2>")
    if intro:
      out.append(f"<p>{html.escape(intro)}</p>")
    out += list(fragments)
  out += ["</body></html>", ""]
  return "\n".join(out)
