"""The report of one run: read the folder, gather the evidence, list the findings, write the files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloforge.files import write_text_atomic
from yoloforge.report import evidence
from yoloforge.report.classes import class_findings
from yoloforge.report.curves import Curves, curve_findings
from yoloforge.report.evidence import LabelStats, Validation
from yoloforge.report.findings import Finding
from yoloforge.run_reader import Run, read_run

log = logging.getLogger(__name__)

# the pictures a report shows when the run has them, in reading order
PICTURES = (
    "results.png",
    "PR_curve.png",
    "F1_curve.png",
    "confusion_matrix_normalized.png",
    "labels.jpg",
    "val_batch0_pred.jpg",
)


@dataclass
class Report:
    run: Run
    summary: dict[str, Any]  # epochs, best epoch and its metrics
    findings: list[Finding]
    validation: Validation | None = None
    labels: LabelStats | None = None
    notes: list[str] = field(default_factory=list)  # what could not be looked at, and why

    @property
    def pictures(self) -> list[str]:
        return [name for name in PICTURES if name in self.run.pictures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run.path),
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "classes": class_table(self),
            "notes": self.notes,
            "validation": self.validation.source if self.validation else None,
        }


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    json: Path


def build_report(
    run: Run,
    validation: Validation | None = None,
    labels: LabelStats | None = None,
    validate: bool = True,
) -> Report:
    """Findings for ``run``. Without a ``validation`` or ``labels`` given, they are rebuilt from the run
    folder (``validate``: validate best.pt on its data) where possible; notes say what was not."""
    notes = list(run.problems)
    if run.epochs == 0:
        notes.append(f"{run.path / 'results.csv'}: no epochs recorded yet, so nothing to say about training.")
    if validation is None and validate:
        validation = evidence.validate_best(run, notes)
    if validation is None:
        validation = evidence.folder_validation(run)
        if not validate:
            notes.append("best.pt was not validated (val=False): no per-class AP or threshold.")
    if labels is None:
        labels = evidence.label_stats_for_run(run, notes)
    findings = curve_findings(run, notes) if run.epochs else []
    findings += class_findings(validation, labels, notes)
    return Report(run, summarize(run), findings, validation, labels, notes)


def summarize(run: Run) -> dict[str, Any]:
    c = Curves.of(run)
    best = c.best_epoch
    summary: dict[str, Any] = {
        "epochs": run.epochs,
        "planned_epochs": run.args.get("epochs"),
        "best_epoch": best,
        "hours": round(float(run.column("time")[-1]) / 3600, 4) if run.epochs else None,
    }
    if best is not None:
        i = int(np.flatnonzero(c.epochs == best)[0])
        for key, column in (
            ("precision", "metrics/precision(B)"),
            ("recall", "metrics/recall(B)"),
            ("map50", "metrics/mAP50(B)"),
            ("map50_95", "metrics/mAP50-95(B)"),
        ):
            summary[key] = round(float(run.column(column)[i]), 5)
    return summary


def class_table(report: Report) -> list[dict[str, Any]]:
    """One row per validated class: its metrics, training objects, typical size, top confusion."""
    v, labels = report.validation, report.labels
    if v is None or not v.classes:
        return []
    confused = {
        f.evidence["true_class"]: f.evidence["predicted_as"] for f in report.findings if f.kind == "confusion"
    }
    rows = []
    for r in v.classes:
        row: dict[str, Any] = {
            "class": r.name,
            "images": r.images,
            "instances": r.instances,
            "precision": round(r.precision, 4),
            "recall": round(r.recall, 4),
            "ap50": round(r.ap50, 4),
            "ap50_95": round(r.ap, 4),
        }
        if labels is not None and r.name in labels.names:
            c = labels.names.index(r.name)
            side = float(labels.val_side_px[c])
            row["train_instances"] = int(labels.train_instances[c])
            row["median_side_px"] = round(side, 1) if np.isfinite(side) else None
        row["confused_with"] = confused.get(r.name)
        rows.append(row)
    return rows


def console_lines(report: Report) -> list[str]:
    """The few sentences printed at the end of training and by ``yoloforge report``."""
    s = report.summary
    lines = []
    if s.get("best_epoch") is not None:
        lines.append(
            f"{report.run.path}: {s['epochs']} epoch{'s' * (s['epochs'] != 1)}; best.pt from epoch "
            f"{s['best_epoch']} with mAP50 "
            f"{s['map50']:.3f} and mAP50-95 {s['map50_95']:.3f}."
        )
    lines += [f.sentence for f in report.findings]
    return lines


def write_report(report: Report) -> ReportFiles:
    """report.html, report.md and report.json in the run folder."""
    from yoloforge.report.html import render_html
    from yoloforge.report.markdown import render_markdown

    folder = report.run.path
    files = ReportFiles(folder / "report.html", folder / "report.md", folder / "report.json")
    write_text_atomic(files.html, render_html(report))
    write_text_atomic(files.markdown, render_markdown(report))
    write_text_atomic(files.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return files


def report_run(folder: str | Path, validate: bool = True) -> tuple[Report, ReportFiles]:
    """``yoloforge report FOLDER``: read, analyse, write, and print the sentences."""
    report = build_report(read_run(folder), validate=validate)
    files = write_report(report)
    for line in [*console_lines(report), f"Report: {files.html} (and report.md, report.json)"]:
        log.info("%s", line)
    return report, files
