"""Parse ActivityNet-style ground truth / prediction JSON into columnar arrays.

Both the vectorised evaluator (``detection.py``) and the loop reference
(``reference.py``) start from these same parsed tables, so the speed comparison
times only the evaluation itself. Strings (video ids, labels) are encoded once
here as integer codes into small vocabularies.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: ``cluster_<k>``, k a plain ASCII decimal (matched whole with ``fullmatch``: "cluster_3\n", "cluster_٣" and
#: "cluster_03" are not cluster 3, so distinct labels never merge into one cluster).
CLUSTER_LABEL = re.compile(r"cluster_(0|[1-9][0-9]*)", re.ASCII)
#: Largest cluster id read (they index arrays as int64; a 30-digit id is a corrupt file, not a clustering).
MAX_CLUSTER_ID = 2**31 - 1


@dataclass(frozen=True)
class GroundTruth:
    """Annotated segments of the evaluated subset.

    ``videos`` lists every video of the subset (also those without annotations);
    ``classes`` are the labels that occur in the subset's annotations, sorted —
    exactly the classes the ActivityNet evaluator averages over.
    """

    version: str
    subset: str | None
    videos: tuple[str, ...]
    classes: tuple[str, ...]
    video: np.ndarray  # int64 (N,), index into videos
    label: np.ndarray  # int64 (N,), index into classes
    start: np.ndarray  # float64 (N,) seconds
    end: np.ndarray  # float64 (N,) seconds

    def __len__(self) -> int:
        return int(self.video.shape[0])


@dataclass(frozen=True)
class Predictions:
    """Scored detections; ``video``/``label`` index into ``videos``/``labels``."""

    videos: tuple[str, ...]
    labels: tuple[str, ...]
    video: np.ndarray  # int64 (M,)
    label: np.ndarray  # int64 (M,)
    start: np.ndarray  # float64 (M,)
    end: np.ndarray  # float64 (M,)
    score: np.ndarray  # float64 (M,)
    video_clusters: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.video.shape[0])

    def select(self, keep: np.ndarray) -> "Predictions":
        """Rows where ``keep`` is True, in their original order."""
        keep = np.asarray(keep, dtype=bool)
        return replace(
            self,
            video=self.video[keep],
            label=self.label[keep],
            start=self.start[keep],
            end=self.end[keep],
            score=self.score[keep],
        )

    def is_clustered(self) -> bool:
        """True for UTAL output: labels ``cluster_<k>`` and/or a ``video_clusters`` map."""
        used = {self.labels[i] for i in np.unique(self.label)}
        clustered = [bool(CLUSTER_LABEL.fullmatch(lab)) for lab in used]
        if any(clustered) and not all(clustered):
            raise ValueError("predictions mix 'cluster_<k>' labels with class labels")
        if self.video_clusters is not None:
            if used and not all(clustered):
                raise ValueError("predictions give 'video_clusters' but their labels are class names, not "
                                 "'cluster_<k>': drop 'video_clusters' for class-labelled detections")
            return True
        return bool(used) and all(clustered)


def _segment(raw, where: str) -> tuple[float, float]:
    """``[start, end]``: a list of exactly two numbers (a string "12" was read as [1, 2], a third value dropped,
    [false, true] read as [0, 1])."""
    if not isinstance(raw, (list, tuple, np.ndarray)) or np.ndim(raw) != 1 or len(raw) != 2:
        raise ValueError(f"{where}: segment must be [start, end], got {_short(raw)}")
    s, e = (_number(x, where, "each segment time") for x in raw)
    if not (math.isfinite(s) and math.isfinite(e)):
        raise ValueError(f"{where}: non-finite segment {raw!r}")
    if e < s:
        raise ValueError(f"{where}: segment ends before it starts {raw!r}")
    return s, e


def _expect(value, kind: type, where: str, what: str):
    """``value`` if it is a ``kind``, else a ValueError saying where and what was expected (a wrongly shaped
    JSON file otherwise fails deep inside with an AttributeError)."""
    if not isinstance(value, kind):
        raise ValueError(f"{where}: expected {what}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _label(det: dict, where: str) -> str:
    """The label as a string; other tools' numeric labels (3, 3.0) are kept as they print. Missing, null,
    true/false or a container is refused (it would silently become a class named "None")."""
    lab = det.get("label")
    if lab is None or isinstance(lab, (bool, dict, list, tuple)):
        raise ValueError(f"{where}: 'label' must be a string, got {_short(lab)}")
    return str(lab)


def _number(raw, where: str, what: str) -> float:
    """A float from anything float() takes (numbers, numeric strings, numpy/torch scalars), not true/false."""
    if not isinstance(raw, bool):
        try:
            return float(raw)
        except (TypeError, ValueError):
            pass
        except OverflowError:  # (an integer of hundreds of digits)
            raise ValueError(f"{where}: {what} is too large, got {_short(raw)}") from None
    raise ValueError(f"{where}: {what} must be a number, got {_short(raw)}")


def parse_ground_truth(data: dict, subset: str | None = None) -> GroundTruth:
    """Read ``{"database": {vid: {"subset", "annotations": [{"label", "segment"}]}}}``.

    ``subset`` is compared case-insensitively ("Test" == "test"); ``None`` keeps all videos.
    """
    if not isinstance(data, dict) or "database" not in data:
        raise ValueError("ground truth JSON has no 'database' key (ActivityNet format expected)")
    _expect(data["database"], dict, "ground truth 'database'", "an object {video_id: {...}}")
    want = subset.lower() if subset is not None else None
    videos: list[str] = []
    rows: list[tuple[int, str, float, float]] = []
    seen_subsets: set[str] = set()
    for vid, entry in data["database"].items():
        _expect(entry, dict, f"ground truth {vid}", "an object with 'subset' and 'annotations'")
        seen_subsets.add(str(entry.get("subset")))
        if want is not None and str(entry.get("subset", "")).lower() != want:
            continue
        v = len(videos)
        videos.append(vid)
        anns = _expect(entry.get("annotations", []), list, f"ground truth {vid} 'annotations'", "a list")
        for k, ann in enumerate(anns):
            where = f"ground truth {vid} annotation {k}"
            _expect(ann, dict, where, "an object with 'label' and 'segment'")
            s, e = _segment(ann.get("segment"), where)
            rows.append((v, _label(ann, where), s, e))
    if want is not None and not videos:
        raise ValueError(f"no ground-truth video in subset {subset!r}; subsets present: {sorted(seen_subsets)}")
    classes = tuple(sorted({r[1] for r in rows}))
    cidx = {c: i for i, c in enumerate(classes)}
    return GroundTruth(
        version=str(data.get("version", "")),
        subset=subset,
        videos=tuple(videos),
        classes=classes,
        video=np.array([r[0] for r in rows], dtype=np.int64),
        label=np.array([cidx[r[1]] for r in rows], dtype=np.int64),
        start=np.array([r[2] for r in rows], dtype=np.float64),
        end=np.array([r[3] for r in rows], dtype=np.float64),
    )


def parse_predictions(data: dict) -> Predictions:
    """Read ``{"results": {vid: [{"label", "score", "segment"}]}, "video_clusters"?: {vid: k}}``."""
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError("prediction JSON has no 'results' key (ActivityNet format expected)")
    _expect(data["results"], dict, "prediction 'results'", "an object {video_id: [detections]}")
    videos: list[str] = []
    labels: dict[str, int] = {}
    vcol: list[int] = []
    lcol: list[int] = []
    scol: list[float] = []
    ecol: list[float] = []
    pcol: list[float] = []
    for vid, dets in data["results"].items():
        v = len(videos)
        videos.append(vid)
        _expect(dets, list, f"prediction {vid}", "a list of detections")
        for k, det in enumerate(dets):
            where = f"prediction {vid} #{k}"
            _expect(det, dict, where, "an object with 'label', 'score' and 'segment'")
            s, e = _segment(det.get("segment"), where)
            score = _number(det.get("score"), where, "'score'")
            if not math.isfinite(score):
                raise ValueError(f"{where}: non-finite score {det['score']!r}")
            lab = _label(det, where)
            vcol.append(v)
            lcol.append(labels.setdefault(lab, len(labels)))
            scol.append(s)
            ecol.append(e)
            pcol.append(score)
    clusters = data.get("video_clusters")
    if clusters is not None:
        _expect(clusters, dict, "prediction 'video_clusters'", "an object {video_id: cluster}")
        out = {}
        for vid, k in clusters.items():  # (integers as other tools write them: 1, 1.0, "1", numpy ints)
            f = _number(k, f"prediction 'video_clusters' {vid}", "its cluster")
            if not f.is_integer() or not 0 <= f <= MAX_CLUSTER_ID:
                raise ValueError(f"prediction 'video_clusters' {vid}: cluster must be an integer in 0..{MAX_CLUSTER_ID}"
                                 f", got {_short(k)}")
            out[str(vid)] = int(f)
        clusters = out
    return Predictions(
        videos=tuple(videos),
        labels=tuple(labels),
        video=np.array(vcol, dtype=np.int64),
        label=np.array(lcol, dtype=np.int64),
        start=np.array(scol, dtype=np.float64),
        end=np.array(ecol, dtype=np.float64),
        score=np.array(pcol, dtype=np.float64),
        video_clusters=clusters,
    )


def codes_into(names: tuple[str, ...], vocabulary: tuple[str, ...]) -> np.ndarray:
    """Lookup table: position of each of ``names`` in ``vocabulary``, -1 when absent."""
    index = {n: i for i, n in enumerate(vocabulary)}
    return np.array([index.get(n, -1) for n in names], dtype=np.int64)


def load_ambiguous(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """THUMOS'14 Ambiguous list: one ``video_id start end`` per line (whitespace separated)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 'video_id start end', got {line!r}")
        s, e = _segment(parts[1:], f"{path}:{n}")
        out.setdefault(parts[0], []).append((s, e))
    return out


def ambiguous_overlap_mask(pred: Predictions, ambiguous: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """True for every prediction whose segment overlaps (positive-length intersection)
    an Ambiguous segment of its video — the THUMOS'14 rule for ignoring detections."""
    m = len(pred)
    if m == 0 or not ambiguous:
        return np.zeros(m, dtype=bool)
    amb_vid, amb_s, amb_e = [], [], []
    code = {v: i for i, v in enumerate(pred.videos)}
    for vid, segs in ambiguous.items():
        if vid in code:
            for s, e in segs:
                amb_vid.append(code[vid])
                amb_s.append(s)
                amb_e.append(e)
    if not amb_vid:
        return np.zeros(m, dtype=bool)
    amb_vid_a = np.asarray(amb_vid, dtype=np.int64)
    order = np.argsort(amb_vid_a, kind="stable")
    amb_vid_a = amb_vid_a[order]
    amb_s_a = np.asarray(amb_s)[order]
    amb_e_a = np.asarray(amb_e)[order]
    counts = np.bincount(amb_vid_a, minlength=len(pred.videos))
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n_pairs = counts[pred.video]
    pred_of_pair = np.repeat(np.arange(m), n_pairs)
    offset = np.arange(pred_of_pair.size) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    amb_of_pair = first[pred.video][pred_of_pair] + offset
    inter = np.minimum(pred.end[pred_of_pair], amb_e_a[amb_of_pair]) - np.maximum(
        pred.start[pred_of_pair], amb_s_a[amb_of_pair]
    )
    return np.bincount(pred_of_pair[inter > 0], minlength=m) > 0
