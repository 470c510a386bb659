"""report.md: the report as Markdown, to paste into an issue or a chat (attach the pictures it names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloforge.report.build import Report


def render_markdown(report: Report) -> str:
    from yoloforge.report.build import class_table

    lines = [f"# Run report: {report.run.path.name}", "", summary_sentence(report.summary), ""]
    lines += ["## Findings", ""]
    for f in report.findings:
        where = f" (epoch {f.epoch})" if f.epoch is not None else ""
        lines += [f"- **{f.kind}**{where}: {f.sentence}", f"  - Try: {f.advice}"]
    if not report.findings:
        lines.append("- None: the run holds too little to judge (see the notes).")
    rows = class_table(report)
    if rows:
        lines += ["", "## Per class", "", *table(rows)]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    if report.pictures:
        lines += ["", f"Pictures in the run folder (attach them): {', '.join(report.pictures)}."]
    settings = shown_settings(report.run.args)
    if settings:
        lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    return "\n".join(lines) + "\n"


SHOWN_SETTINGS = ("model", "data", "epochs", "batch", "imgsz", "optimizer", "lr0", "seed", "pretrained")


def shown_settings(args: dict[str, Any]) -> dict[str, Any]:
    """The run's main settings, then every hyperparameter (optimisation, augmentation, loss gains)
    that is not at its default: what a reader needs to repeat or compare the run."""
    from yoloforge.settings import AugmentSettings, LossSettings, OptimSettings, to_flat_dict

    defaults: dict[str, Any] = {}
    for group in (OptimSettings(), AugmentSettings(), LossSettings()):
        defaults.update(to_flat_dict(group))
    main = {k: v for k, v in args.items() if k in SHOWN_SETTINGS}
    return main | {k: args[k] for k in defaults if k in args and k not in main and args[k] != defaults[k]}


def summary_sentence(s: dict[str, Any]) -> str:
    if s.get("best_epoch") is None:
        return f"{s['epochs']} epochs recorded, none validated."
    return (
        f"{s['epochs']} of {s['planned_epochs']} epochs in {s['hours']:.2f} h; best.pt from epoch "
        f"{s['best_epoch']}: precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
        f"mAP50 {s['map50']:.3f}, mAP50-95 {s['map50_95']:.3f}."
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table of dicts sharing their keys (None shows as a dash)."""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join("-" if row.get(k) is None else f"{row[k]}" for k in keys) + " |")
    return out
