"""report.html: one self-contained page (no scripts, no network) beside the run's pictures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jinja2 import Environment

if TYPE_CHECKING:
    from yoloforge.report.build import Report

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>Run report: {{ name }}</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.finding { border-left: 4px solid #4a7ab5; padding: 0.3em 0.8em; margin: 0.8em 0; background: #f5f8fc; }
.kind { font-weight: bold; font-family: monospace; }
.advice { color: #245; }
details { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
</style>
</head>
<body>
<h1>Run report: {{ name }}</h1>
<p>{{ summary_line }}</p>
<h2>Findings</h2>
{% for f in findings %}
<div class="finding">
  <span class="kind">{{ f.kind }}</span>{% if f.epoch is not none %} (epoch {{ f.epoch }}){% endif %}:
  {{ f.sentence }}
  <p class="advice">Try: {{ f.advice }}</p>
  <details><summary>numbers</summary>
  <table>{% for k, v in f.evidence.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
  </details>
</div>
{% else %}
<p>None: the run holds too little to judge (see the notes).</p>
{% endfor %}
{% if classes %}
<h2>Per class</h2>
<table>
<tr>{% for k in classes[0] %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in classes %}<tr>{% for v in row.values() %}<td>{{ "-" if v is none else v }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% endif %}
{% if notes %}
<h2>Notes</h2>
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
{% endif %}
{% if pictures %}
<h2>Pictures</h2>
{% for p in pictures %}<figure><img src="{{ p }}" alt="{{ p }}"><figcaption>{{ p }}</figcaption></figure>
{% endfor %}
{% endif %}
{% if settings %}
<h2>Settings</h2>
<table>{% for k, v in settings.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{% endif %}
</body>
</html>
"""


def render_html(report: Report) -> str:
    from yoloforge.report.build import class_table
    from yoloforge.report.markdown import shown_settings, summary_sentence

    page = Environment(autoescape=True, keep_trailing_newline=True).from_string(TEMPLATE)
    return page.render(
        name=report.run.path.name,
        summary_line=summary_sentence(report.summary),
        findings=[f.to_dict() for f in report.findings],
        classes=class_table(report),
        notes=report.notes,
        pictures=report.pictures,
        settings=shown_settings(report.run.args),
    )
