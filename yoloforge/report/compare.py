"""``yoloforge report runA runB``: two runs side by side, which is better and where, which settings differ.

Written into the first run's folder as compare.html, compare.md and compare.json."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment

from yoloforge.files import write_text_atomic
from yoloforge.report import trend
from yoloforge.report.build import Report, ReportFiles, build_report
from yoloforge.report.curves import MAP
from yoloforge.report.markdown import table
from yoloforge.run_reader import read_run

log = logging.getLogger(__name__)

METRICS = ("map50_95", "map50", "precision", "recall")
IGNORED_SETTINGS = ("name", "save_dir", "exist_ok", "resume", "project")  # differ in every pair


@dataclass
class Comparison:
    a: Report
    b: Report
    metrics: list[dict[str, Any]]  # metric, a, b, difference, better
    classes: list[dict[str, Any]]  # class, AP50-95 of a and b, better
    settings: list[dict[str, Any]]  # setting, a, b (only those that differ)
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": str(self.a.run.path),
            "b": str(self.b.run.path),
            "verdict": self.verdict,
            "metrics": self.metrics,
            "classes": self.classes,
            "settings": self.settings,
            "findings": {"a": [f.kind for f in self.a.findings], "b": [f.kind for f in self.b.findings]},
        }


def compare(a: Report, b: Report) -> Comparison:
    names = (a.run.path.name, b.run.path.name)
    metrics = []
    for key in METRICS:
        va, vb = a.summary.get(key), b.summary.get(key)
        if va is None or vb is None:
            continue
        better = names[0] if va > vb else names[1] if vb > va else "equal"
        metrics.append(
            {"metric": key, names[0]: va, names[1]: vb, "difference": round(vb - va, 5), "better": better}
        )
    return Comparison(a, b, metrics, _classes(a, b, names), _settings(a, b, names), _verdict(a, b, names))


def _verdict(a: Report, b: Report, names: tuple[str, str]) -> str:
    ma, mb = a.summary.get("map50_95"), b.summary.get("map50_95")
    if ma is None or mb is None:
        return "One of the runs has no validated epoch: no verdict."
    noise = max((trend.noise(r.run.column(MAP)) for r in (a, b)), default=math.nan)
    noise_text = f"epoch-to-epoch noise {noise:.3f}" if math.isfinite(noise) else "noise unknown (short runs)"
    winner, loser = (names[0], names[1]) if ma >= mb else (names[1], names[0])
    diff = abs(mb - ma)
    if math.isfinite(noise) and diff < 2 * noise:
        return (
            f"Level within noise: best mAP50-95 {ma:.3f} ({names[0]}) and {mb:.3f} ({names[1]}) differ by "
            f"{diff:.3f}, less than twice the {noise_text}."
        )
    return (
        f"{winner} is better: best mAP50-95 {max(ma, mb):.3f} against {min(ma, mb):.3f} for {loser} "
        f"(difference {diff:.3f}; {noise_text})."
    )


def _classes(a: Report, b: Report, names: tuple[str, str]) -> list[dict[str, Any]]:
    if not (a.validation and b.validation):
        return []
    ap_b = {r.name: r.ap for r in b.validation.classes}
    rows = []
    for r in a.validation.classes:
        if r.name in ap_b:
            va, vb = round(r.ap, 4), round(ap_b[r.name], 4)
            better = names[0] if va > vb else names[1] if vb > va else "equal"
            rows.append({"class": r.name, names[0]: va, names[1]: vb, "better": better})
    return rows


def _settings(a: Report, b: Report, names: tuple[str, str]) -> list[dict[str, Any]]:
    keys = [k for k in {**a.run.args, **b.run.args} if k not in IGNORED_SETTINGS]
    return [
        {"setting": k, names[0]: a.run.args.get(k), names[1]: b.run.args.get(k)}
        for k in keys
        if a.run.args.get(k) != b.run.args.get(k)
    ]


def render_markdown(c: Comparison) -> str:
    lines = [f"# {c.a.run.path.name} against {c.b.run.path.name}", "", c.verdict, ""]
    for title, rows in (("Metrics at best.pt's epoch", c.metrics), ("AP50-95 per class", c.classes)):
        if rows:
            lines += [f"## {title}", "", *table(rows), ""]
    lines += ["## Settings that differ", ""]
    lines += table(c.settings) if c.settings else ["None (args.yaml of both runs agree)."]
    for r in (c.a, c.b):
        lines += ["", f"## Findings of {r.run.path.name}", ""]
        lines += [f"- **{f.kind}**: {f.sentence}" for f in r.findings] or ["- none"]
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; }
img { max-width: 49%; }</style></head>
<body><h1>{{ title }}</h1><p>{{ verdict }}</p>
{% for heading, rows in tables %}{% if rows %}<h2>{{ heading }}</h2><table>
<tr>{% for k in rows[0] %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for v in row.values() %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}{% endfor %}
{% for name, findings in findings %}<h2>Findings of {{ name }}</h2><ul>
{% for f in findings %}<li><b>{{ f.kind }}</b>: {{ f.sentence }}</li>{% else %}<li>none</li>{% endfor %}</ul>
{% endfor %}
{% if pictures %}<h2>results.png</h2>
{% for p in pictures %}<img src="{{ p }}" alt="{{ p }}">{% endfor %}{% endif %}
</body></html>
"""


def render_html(c: Comparison, folder: Path) -> str:
    pictures = [  # relative to the page, so the two folders can move together
        Path(os.path.relpath(r.run.pictures["results.png"], folder)).as_posix()
        for r in (c.a, c.b)
        if "results.png" in r.run.pictures
    ]
    return (
        Environment(autoescape=True)
        .from_string(PAGE)
        .render(
            title=f"{c.a.run.path.name} against {c.b.run.path.name}",
            verdict=c.verdict,
            tables=[
                ("Metrics at best.pt's epoch", c.metrics),
                ("AP50-95 per class", c.classes),
                ("Settings that differ", c.settings),
            ],
            findings=[(r.run.path.name, r.findings) for r in (c.a, c.b)],
            pictures=pictures,
        )
    )


def compare_runs(
    folder_a: str | Path, folder_b: str | Path, validate: bool = True
) -> tuple[Comparison, ReportFiles]:
    """Report on both runs, compare them, write compare.* into the first folder, print the verdict."""
    reports = [build_report(read_run(f), validate=validate) for f in (folder_a, folder_b)]
    c = compare(*reports)
    folder = c.a.run.path
    files = ReportFiles(folder / "compare.html", folder / "compare.md", folder / "compare.json")
    write_text_atomic(files.html, render_html(c, folder))
    write_text_atomic(files.markdown, render_markdown(c))
    write_text_atomic(files.json, json.dumps(c.to_dict(), indent=2, default=str) + "\n")
    log.info("%s\nComparison: %s (and compare.md, compare.json)", c.verdict, files.html)
    return c, files
