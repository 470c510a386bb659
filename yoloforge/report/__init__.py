"""The run report: what a training run's numbers mean, in sentences backed by those numbers, and what
to try next. ``yoloforge report runs/detect/train`` (or two folders to compare them); written at the
end of every training unless ``report=False``.

    trend      least-squares slopes with their standard error, epoch-to-epoch noise
    curves     findings from results.csv: converging, still_improving, overfitting, unstable, localisation
    classes    findings from a validation and the labels: weak_class, confusion, background_fp,
               small_objects, threshold
    evidence   that validation and those label statistics, from the trainer or the run folder
    build      the Report, its console sentences, and report.html / .md / .json
    compare    two runs side by side
"""

from yoloforge.report.build import Report, ReportFiles, build_report, report_run, write_report
from yoloforge.report.findings import KINDS, Finding

__all__ = ["KINDS", "Finding", "Report", "ReportFiles", "build_report", "report_run", "write_report"]
