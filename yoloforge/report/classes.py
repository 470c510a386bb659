"""Findings from a validation of best.pt and the labels: weak classes, confusions, background false
positives, small objects, and the confidence threshold to deploy with."""

from __future__ import annotations

import math

import numpy as np

from yoloforge.report.evidence import LabelStats, Validation
from yoloforge.report.findings import Finding
from yoloforge.run_reader import ConfusionData

WEAK_RATIO, WEAK_GAP, MAX_WEAK = 0.75, 0.05, 3  # AP50-95 below 75% of the others' mean (and 0.05 under)
SHORT_OF_IMAGES = 0.5  # fewer training objects than half the other classes' median
CONFUSED_SHARE, CONFUSED_MIN = 0.10, 5  # >= 10% of a class's objects (and >= 5) taken for another
BACKGROUND_SHARE, BACKGROUND_MIN = 0.25, 10  # >= 25% of the detections (and >= 10) where nothing is
SMALL_PX = 32  # COCO's small objects: under 32 x 32 pixels


def class_findings(
    validation: Validation | None, labels: LabelStats | None, notes: list[str] | None = None
) -> list[Finding]:
    found: list[Finding] = []
    if validation is not None and validation.classes:
        found += weak_classes(validation, labels)
    if validation is not None and validation.confusion is not None:
        found += confusions(validation.confusion)
        found += [f for f in (background_fp(validation.confusion, labels),) if f]
    if validation is not None and validation.classes and labels is not None:
        found += [f for f in (small_objects(validation, labels),) if f]
    if validation is not None and validation.classes:
        if validation.f1 > 0:
            found.append(threshold(validation))
        elif notes is not None:
            notes.append("No detection matched a label at any confidence (F1 0): no threshold to suggest.")
    return found


def weak_classes(validation: Validation, labels: LabelStats | None) -> list[Finding]:
    rows = validation.classes
    if len(rows) < 2:
        return []
    ap = np.array([r.ap for r in rows])
    found = []
    for i in np.argsort(ap, kind="stable"):
        others = float(np.delete(ap, i).mean())
        row = rows[i]
        if not (row.ap < WEAK_RATIO * others and row.ap < others - WEAK_GAP) or len(found) == MAX_WEAK:
            break
        evidence = {
            "class": row.name,
            "ap50_95": row.ap,
            "ap50": row.ap50,
            "others_mean_ap50_95": others,
            "precision": row.precision,
            "recall": row.recall,
            "val_instances": row.instances,
        }
        sentence = (
            f"Weak class '{row.name}': AP50-95 {row.ap:.3f} against {others:.3f} for the other classes "
            f"(precision {row.precision:.3f}, recall {row.recall:.3f}, {row.instances} val objects)."
        )
        advice = "Look at its misses in val_batch*_pred.jpg and check its labels (yoloforge check)."
        short = _short_of_images(labels, row.name)
        if short is not None:
            count, median = short
            evidence |= {"train_instances": count, "others_median_train_instances": median}
            sentence += f" It has {count} training objects against a median of {median:g} for the others."
            advice = (
                f"Add images of '{row.name}' (at least as many objects as the others' {median:g}); " + advice
            )
        found.append(Finding("weak_class", sentence, advice, evidence))
    return found


def _short_of_images(labels: LabelStats | None, name: str) -> tuple[int, float] | None:
    if labels is None or name not in labels.names or len(labels.names) < 2:
        return None
    c = labels.names.index(name)
    median = float(np.median(np.delete(labels.train_instances, c)))
    count = int(labels.train_instances[c])
    return (count, median) if count < SHORT_OF_IMAGES * median else None


def confusions(cm: ConfusionData) -> list[Finding]:
    """For each true class, the other class it is most often predicted as."""
    nc, m, found = len(cm.names), cm.matrix, []
    for true in range(nc):
        total = int(m[:, true].sum())
        column = m[:nc, true].copy()
        column[true] = 0
        pred = int(np.argmax(column)) if nc > 1 else 0
        count = int(column[pred]) if nc > 1 else 0
        if total == 0 or count < CONFUSED_MIN or count / total < CONFUSED_SHARE:
            continue
        share = count / total
        evidence = {
            "true_class": cm.names[true],
            "predicted_as": cm.names[pred],
            "count": count,
            "true_total": total,
            "share": share,
            "correct": int(m[true, true]),
            "conf": cm.conf,
        }
        sentence = (
            f"'{cm.names[true]}' is taken for '{cm.names[pred]}': {count} of its {total} validation objects "
            f"({100 * share:.0f}%) were detected as '{cm.names[pred]}' (at conf {cm.conf:g})."
        )
        advice = (
            f"Check how '{cm.names[true]}' and '{cm.names[pred]}' are labelled (a mix-up in the labels shows "
            "this way); add images that show what tells them apart; a larger imgsz if it is small."
        )
        found.append(Finding("confusion", sentence, advice, evidence))
    return found


def background_fp(cm: ConfusionData, labels: LabelStats | None) -> Finding | None:
    nc, m = len(cm.names), cm.matrix
    false_alarms, detections = int(m[:nc, nc].sum()), int(m[:nc, :].sum())
    if detections == 0 or false_alarms < BACKGROUND_MIN or false_alarms / detections < BACKGROUND_SHARE:
        return None
    share = false_alarms / detections
    worst = int(np.argmax(m[:nc, nc]))
    evidence = {
        "false_alarms": false_alarms,
        "detections": detections,
        "share": share,
        "conf": cm.conf,
        "most_from_class": cm.names[worst],
        "most_from_class_count": int(m[worst, nc]),
    }
    sentence = (
        f"Background false positives: {false_alarms} of {detections} detections above conf {cm.conf:g} "
        f"({100 * share:.0f}%) are on no object, most of them '{cm.names[worst]}' ({int(m[worst, nc])})."
    )
    advice = (
        "Add background images (no objects, empty label file): the guide advises 0-10% of the training images"
    )
    if labels is not None and labels.train_images:
        bg = labels.train_backgrounds / labels.train_images
        evidence |= {"train_backgrounds": labels.train_backgrounds, "train_images": labels.train_images}
        sentence += (
            f" The training set has {labels.train_backgrounds} background images of {labels.train_images}."
        )
        advice += f"; now {100 * bg:.1f}%"
    return Finding("background_fp", sentence, advice + ".", evidence)


def small_objects(validation: Validation, labels: LabelStats) -> Finding | None:
    """Classes whose typical object is under 32 pixels across at the training imgsz and whose AP is low."""
    ap = {r.name: r.ap for r in validation.classes}
    mean = float(np.mean(list(ap.values())))
    small = []
    for c, name in enumerate(labels.names):
        side = float(labels.val_side_px[c])
        if name in ap and math.isfinite(side) and side < SMALL_PX and (len(ap) == 1 or ap[name] < mean):
            small.append((name, side, ap[name]))
    if not small:
        return None
    listed = ", ".join(f"'{n}' {s:.0f} px (AP50-95 {a:.3f})" for n, s, a in small)
    bigger = 2 * labels.imgsz
    evidence = {
        "imgsz": labels.imgsz,
        "classes": [n for n, _, _ in small],
        "median_side_px": [s for _, s, _ in small],
        "ap50_95": [a for _, _, a in small],
        "mean_ap50_95": mean,
    }
    sentence = (
        f"Small objects: at imgsz {labels.imgsz} the typical object is under {SMALL_PX} px across for "
        f"{listed}; the mean AP50-95 of all classes is {mean:.3f}."
    )
    advice = f"Train (and predict) at a larger imgsz, e.g. imgsz={bigger}, so these objects get more pixels."
    return Finding("small_objects", sentence, advice, evidence)


def threshold(validation: Validation) -> Finding:
    v = validation
    evidence = {"conf": v.conf, "precision": v.precision, "recall": v.recall, "f1": v.f1}
    sentence = (
        f"Deployment: the mean F1 over classes is highest, {v.f1:.3f}, at conf {v.conf:.3f}, "
        f"with precision {v.precision:.3f} and recall {v.recall:.3f}."
    )
    advice = (
        f"Predict with conf={v.conf:.2f}; raise it for fewer false alarms, lower it to miss fewer objects "
        "(see F1_curve.png, P_curve.png, R_curve.png)."
    )
    return Finding("threshold", sentence, advice, evidence)
