"""One call from JSON dicts to a full detection report (used by the CLI and the Prefect flow)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.evaluation.detection import average_precision_detection
from models.evaluation.io import (
    GroundTruth,
    Predictions,
    ambiguous_overlap_mask,
    codes_into,
    load_ambiguous,
    parse_ground_truth,
    parse_predictions,
)
from models.evaluation.mapping import ClusterMapping, map_clusters

THUMOS14_TIOU: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
ACTIVITYNET_TIOU: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 10) for i in range(10))
# Sub-ranges of thresholds (step 0.1) whose mean mAP THUMOS'14 papers report.
PAPER_RANGES: tuple[tuple[float, float], ...] = ((0.1, 0.5), (0.3, 0.7), (0.1, 0.7))


def default_tiou_thresholds(version: str) -> tuple[float, ...]:
    """THUMOS'14 thresholds 0.1:0.1:0.7 when the GT version names THUMOS, else ActivityNet 0.5:0.05:0.95."""
    return THUMOS14_TIOU if "thumos" in version.lower() else ACTIVITYNET_TIOU


def range_averages(tiou: list[float], mean_ap: list[float]) -> dict[str, float]:
    """Mean mAP over each ``PAPER_RANGES`` range whose thresholds (step 0.1) are all evaluated."""
    out: dict[str, float] = {}
    for lo, hi in PAPER_RANGES:
        wanted = [round(lo + 0.1 * i, 10) for i in range(int(round((hi - lo) / 0.1)) + 1)]
        idx = [next((j for j, t in enumerate(tiou) if abs(t - w) < 1e-9), None) for w in wanted]
        if None not in idx:
            out[f"{lo:g}:{hi:g}"] = float(np.mean([mean_ap[j] for j in idx]))
    return out


@dataclass
class EvaluationResult:
    """Detection mAP report. APs are fractions in [0, 1] (the table prints percentages)."""

    tiou: list[float]
    mAP: list[float]
    average_mAP: float
    per_class_AP: dict[str, list[float]]
    average_mAP_ranges: dict[str, float] = field(default_factory=dict)
    mapping: ClusterMapping | None = None
    subset: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "tiou": self.tiou,
            "mAP": self.mAP,
            "average_mAP": self.average_mAP,
            "average_mAP_ranges": self.average_mAP_ranges,
            "per_class_AP": self.per_class_AP,
            "mapping": self.mapping.to_dict() if self.mapping else None,
            "subset": self.subset,
            "counts": self.counts,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        """Human-readable table: mAP per threshold, per-class AP, range averages, mapping."""
        name_w = max([len("mAP"), *(len(c) for c in self.per_class_AP)]) + 2
        head = "tIoU".ljust(name_w) + "".join(f"{t:>7.2f}" for t in self.tiou) + "    avg"
        lines = [head, "-" * len(head)]

        def row(name: str, values: list[float]) -> str:
            return name.ljust(name_w) + "".join(f"{100 * v:7.2f}" for v in values) + f"{100 * np.mean(values):7.2f}"

        lines.append(row("mAP", self.mAP))
        lines.append("-" * len(head))
        lines.extend(row(c, ap) for c, ap in self.per_class_AP.items())
        lines.append("")
        full = f"{self.tiou[0]:g}:{self.tiou[-1]:g}"
        lines.append(f"average mAP ({full}): {100 * self.average_mAP:.2f}")
        for rng, v in self.average_mAP_ranges.items():
            if rng != full:
                lines.append(f"average mAP ({rng}): {100 * v:.2f}")
        if self.mapping is not None:
            m = self.mapping
            fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
            lines.append(
                f"cluster mapping: {m.method} (video clusters from {m.video_clusters_source}), "
                f"NMI {fmt(m.nmi)}, ARI {fmt(m.ari)} over {m.n_videos} videos"
            )
            for k, c in sorted(m.cluster_to_class.items()):
                lines.append(f"  cluster_{k} -> {c}")
            if m.unmapped_clusters:
                lines.append("  unmapped: " + ", ".join(f"cluster_{k}" for k in m.unmapped_clusters))
        c = self.counts
        lines.append(
            f"subset {self.subset or 'all'}: {c.get('videos', 0)} videos, {c.get('gt_segments', 0)} GT segments, "
            f"{c.get('predictions', 0)} predictions ({c.get('dropped_ambiguous', 0)} dropped as Ambiguous, "
            f"{c.get('unknown_label', 0)} with a label outside the GT classes ignored, "
            f"{c.get('outside_videos', 0)} in videos outside the subset counted as false positives, "
            f"{c.get('ignored_outside_videos', 0)} such ignored)"
        )
        return "\n".join(lines)


def evaluate_detection(
    gt: dict | GroundTruth,
    pred: dict | Predictions,
    subset: str | None = None,
    tiou_thresholds=None,
    ambiguous: dict[str, list[tuple[float, float]]] | str | Path | None = None,
    mapping: str = "hungarian",
    ignore_outside_videos: bool = False,
) -> EvaluationResult:
    """ActivityNet detection mAP of ``pred`` against ``gt`` (ActivityNet-format dicts).

    ``subset`` picks GT videos (None: all); thresholds default from the GT version;
    ``ambiguous`` ({vid: [(s, e)]} or a THUMOS list file) drops predictions overlapping
    Ambiguous segments; UTAL ``cluster_<k>`` predictions are first mapped to classes
    (``mapping`` = "hungarian" | "majority"). Predictions for videos outside the evaluated
    GT videos are false positives, as in the official code, unless ``ignore_outside_videos``.
    """
    gt_t = gt if isinstance(gt, GroundTruth) else parse_ground_truth(gt, subset)
    pred_t = pred if isinstance(pred, Predictions) else parse_predictions(pred)
    if not gt_t.classes:
        raise ValueError("the ground truth has no annotated segment in the evaluated subset")
    thresholds = list(tiou_thresholds) if tiou_thresholds is not None else list(default_tiou_thresholds(gt_t.version))
    thresholds = [float(t) for t in thresholds]
    if not thresholds or any(not (0.0 <= t <= 1.0) or math.isnan(t) for t in thresholds):
        raise ValueError(f"tIoU thresholds must be in [0, 1], got {thresholds}")
    if len(set(thresholds)) != len(thresholds):  # (a repeated one would weigh twice in the average mAP)
        raise ValueError(f"tIoU thresholds repeat a value: {thresholds}")
    thresholds = sorted(thresholds)  # (the table's columns and the "average mAP (lo:hi)" range)
    n_pred = len(pred_t)
    if n_pred and not (codes_into(pred_t.videos, gt_t.videos) >= 0).any():
        # Every prediction would be a false positive and the mapping would see no video: almost surely the
        # wrong ground truth (--dataset) or subset, not a result worth printing as mAP 0.
        raise ValueError(f"none of the {len(pred_t.videos)} predicted videos (e.g. {pred_t.videos[0]!r}) is among the "
                         f"{len(gt_t.videos)} ground-truth videos of subset {subset!r} (e.g. "
                         f"{gt_t.videos[0] if len(gt_t.videos) else None!r}): wrong dataset or subset?")

    report = None
    if pred_t.is_clustered():
        # Map on all detections: the clustering is the model's output, independent of the
        # Ambiguous filtering that only concerns scoring.
        pred_t, report = map_clusters(gt_t, pred_t, mapping)
    n_amb = 0
    if ambiguous is not None:
        amb = load_ambiguous(ambiguous) if isinstance(ambiguous, (str, Path)) else ambiguous
        drop = ambiguous_overlap_mask(pred_t, amb)
        n_amb = int(drop.sum())
        pred_t = pred_t.select(~drop)

    n_ignored = 0
    if ignore_outside_videos:
        inside = codes_into(pred_t.videos, gt_t.videos)[pred_t.video] >= 0
        n_ignored = int(np.count_nonzero(~inside))
        pred_t = pred_t.select(inside)

    det = average_precision_detection(gt_t, pred_t, thresholds)
    mean_ap = [float(x) for x in det.mean_ap]
    return EvaluationResult(
        tiou=thresholds,
        mAP=mean_ap,
        average_mAP=float(np.mean(mean_ap)),
        per_class_AP={c: [float(x) for x in det.ap[:, i]] for i, c in enumerate(det.classes)},
        average_mAP_ranges=range_averages(thresholds, mean_ap),
        mapping=report,
        subset=subset if subset is not None else gt_t.subset,
        counts={
            "videos": len(gt_t.videos),
            "gt_segments": len(gt_t),
            "predictions": n_pred,
            "dropped_ambiguous": n_amb,
            "unknown_label": det.n_pred_unknown_label,
            "outside_videos": det.n_pred_unknown_video,
            "ignored_outside_videos": n_ignored,
            "scored": det.n_pred_used,
        },
    )
