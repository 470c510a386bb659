"""doctor.json and the console table.

doctor.json: ``{"data", "imgsz", "model", "images": {split: n}, "findings": [{"check", "severity",
"value", "target", "message", "items"}, ...]}``, findings in ``report.CHECKS`` order.
"""

from __future__ import annotations

import json
from typing import Any

from yoloforge.doctor.report import DoctorReport, Finding
from yoloforge.files import write_text_atomic

SHARE_CHECKS = ("backgrounds", "small_objects", "border_boxes", "overlooked", "swapped", "badly_located")


def report_dict(report: DoctorReport) -> dict[str, Any]:
    return {
        "data": str(report.data),
        "imgsz": report.imgsz,
        "model": report.model,
        "images": report.n_images,
        "findings": [f.as_dict() for f in report.findings],
    }


def write_json(report: DoctorReport) -> None:
    write_text_atomic(report.json, json.dumps(report_dict(report), indent=1) + "\n")


def shown_value(finding: Finding) -> str:
    """The measured figure as the table shows it: 12%, 1,204, 3.5, or the variety summary."""
    v = finding.value
    if v is None:
        return "-"
    if isinstance(v, dict):  # variety
        low, high = v["brightness_p10_p90"]
        return f"{v['sizes']} sizes, grey {low:.0f}-{high:.0f}"
    if finding.check in SHARE_CHECKS:
        return f"{v:.1%}"
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def console_table(report: DoctorReport) -> list[str]:
    """One line per check: name, measured, target, status, and the first thing to do."""
    rows = [(f.check, shown_value(f), f.target, f.severity.upper(), f.message) for f in report.findings]
    widths = [max(len(r[i]) for r in [("check", "value", "target", "", ""), *rows]) for i in range(3)]
    head = (
        f"{'check':<{widths[0]}}  {'value':>{widths[1]}}  {'target':<{widths[2]}}  {'':<4}  first thing to do"
    )
    lines = [f"Dataset doctor: {report.data} at imgsz={report.imgsz}", head]
    for check, value, target, status, message in rows:
        lines.append(
            f"{check:<{widths[0]}}  {value:>{widths[1]}}  {target:<{widths[2]}}  {status:<4}  {message}"
        )
    n_fail = sum(f.severity == "fail" for f in report.findings)
    n_warn = sum(f.severity == "warn" for f in report.findings)
    lines.append(f"{n_fail} fail, {n_warn} warn, {len(report.findings) - n_fail - n_warn} ok")
    return lines
