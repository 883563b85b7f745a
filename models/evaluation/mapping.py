"""Map UTAL cluster ids to classes, and score the video clustering (NMI, ARI).

Unsupervised localisers label detections ``cluster_<k>``; before the ActivityNet AP can
be computed each cluster is assigned a class from the video-level cluster × class
table (docs/evaluation.md explains the conventions chosen here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.evaluation.io import CLUSTER_LABEL, MAX_CLUSTER_ID, GroundTruth, Predictions

MAPPING_METHODS = ("hungarian", "majority")


@dataclass(frozen=True)
class ClusterMapping:
    """Which cluster became which class, and how well the video clustering agrees with GT."""

    method: str
    cluster_to_class: dict[int, str]  # unmapped clusters are absent
    nmi: float | None  # None when no evaluated video has both a cluster and a GT label
    ari: float | None
    video_clusters_source: str  # "video_clusters" (given) or "top_score" (inferred)
    n_videos: int  # videos entering NMI/ARI
    unmapped_clusters: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "cluster_to_class": {f"cluster_{k}": c for k, c in sorted(self.cluster_to_class.items())},
            "unmapped_clusters": [f"cluster_{k}" for k in self.unmapped_clusters],
            "nmi": self.nmi,
            "ari": self.ari,
            "video_clusters_source": self.video_clusters_source,
            "n_videos": self.n_videos,
        }


def cluster_id(label: str) -> int:
    """``"cluster_7"`` -> 7."""
    m = CLUSTER_LABEL.fullmatch(label)
    if not m or int(m.group(1)) > MAX_CLUSTER_ID:
        raise ValueError(f"not a cluster label: {label!r:.60} (expected 'cluster_<k>', k in 0..{MAX_CLUSTER_ID})")
    return int(m.group(1))


def video_clusters_by_score(pred: Predictions) -> dict[str, int]:
    """A video's cluster when ``video_clusters`` is absent: the cluster label with the highest
    total score over the video's predictions (ties: smallest cluster id)."""
    if len(pred) == 0:
        return {}
    ids = np.array([cluster_id(lab) for lab in pred.labels], dtype=np.int64)
    cl = ids[pred.label]
    uniq_cl, cl_code = np.unique(cl, return_inverse=True)
    n_cl = uniq_cl.size
    totals = np.bincount(pred.video * n_cl + cl_code, weights=pred.score, minlength=len(pred.videos) * n_cl)
    totals = totals.reshape(len(pred.videos), n_cl)
    present = np.bincount(pred.video * n_cl + cl_code, minlength=len(pred.videos) * n_cl).reshape(totals.shape) > 0
    totals = np.where(present, totals, -np.inf)
    best = totals.argmax(axis=1)  # first max == smallest cluster id, uniq_cl is sorted
    has = present.any(axis=1)
    return {pred.videos[v]: int(uniq_cl[best[v]]) for v in np.flatnonzero(has)}


def cluster_class_table(
    video_cluster: dict[str, int], gt: GroundTruth
) -> tuple[list[int], np.ndarray]:
    """Rows: clusters (sorted ids); columns: ``gt.classes``; entry = number of evaluated videos
    of that cluster whose GT contains that class (a multi-class video counts for each)."""
    clusters = sorted(set(video_cluster.values()))
    row = {k: i for i, k in enumerate(clusters)}
    table = np.zeros((len(clusters), len(gt.classes)), dtype=np.int64)
    classes_of = _classes_per_video(gt)
    for v, name in enumerate(gt.videos):
        k = video_cluster.get(name)
        if k is not None:
            for c in classes_of[v]:
                table[row[k], c] += 1
    return clusters, table


def _classes_per_video(gt: GroundTruth) -> list[set[int]]:
    out: list[set[int]] = [set() for _ in gt.videos]
    for v, c in zip(gt.video.tolist(), gt.label.tolist()):
        out[v].add(c)
    return out


def hungarian_mapping(table: np.ndarray) -> dict[int, int]:
    """One-to-one cluster row -> class column maximising the number of agreeing videos
    (scipy ``linear_sum_assignment``); with more clusters than classes some stay unmapped."""
    if table.size == 0:
        return {}
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def majority_mapping(table: np.ndarray) -> dict[int, int]:
    """Each cluster row -> its most frequent class column (ties: first column); clusters
    seen in no annotated video stay unmapped. Several clusters may share a class."""
    return {int(r): int(table[r].argmax()) for r in range(table.shape[0]) if table[r].sum() > 0}


def video_majority_labels(gt: GroundTruth) -> dict[str, int]:
    """Single label per annotated video for NMI/ARI: the class with most GT segments in it,
    ties broken by the class whose first segment comes first in the annotation list."""
    counts: dict[int, dict[int, int]] = {}
    for v, c in zip(gt.video.tolist(), gt.label.tolist()):
        counts.setdefault(v, {}).setdefault(c, 0)
        counts[v][c] += 1
    # dicts keep first-insertion order, and max() returns the first maximal item
    return {gt.videos[v]: max(cc, key=cc.__getitem__) for v, cc in counts.items()}


def contingency_table(labels_true, labels_pred) -> np.ndarray:
    """Counts n_ij of items with true label i and predicted label j (only labels that occur)."""
    _, ti = np.unique(np.asarray(labels_true), return_inverse=True)
    _, pi = np.unique(np.asarray(labels_pred), return_inverse=True)
    table = np.zeros((ti.max() + 1 if ti.size else 0, pi.max() + 1 if pi.size else 0), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    n = counts.sum()
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(contingency: np.ndarray) -> float:
    """NMI with arithmetic-mean normalisation, NMI = I(U;V) / ((H(U) + H(V)) / 2), natural log
    (scikit-learn's default); both labellings a single cluster -> 1.0, I = 0 -> 0.0."""
    table = np.asarray(contingency, dtype=np.float64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] == table.shape[1] == 1 or table.size == 0:
        return 1.0
    n = table.sum()
    a = table.sum(axis=1, keepdims=True)
    b = table.sum(axis=0, keepdims=True)
    nz = table > 0
    mi = float((table[nz] / n * np.log(table[nz] * n / (a * b)[nz])).sum())
    if mi <= 0.0:
        return 0.0
    return mi / ((_entropy(a.ravel()) + _entropy(b.ravel())) / 2.0)


def adjusted_rand_index(contingency: np.ndarray) -> float:
    """ARI (Hubert & Arabie 1985): (Σ C(n_ij,2) − E) / (½(Σ C(a_i,2) + Σ C(b_j,2)) − E),
    E = Σ C(a_i,2) · Σ C(b_j,2) / C(n,2); identical trivial partitions -> 1.0."""
    table = np.asarray(contingency, dtype=np.int64)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    n = int(table.sum())
    index = pairs(table)
    sum_a, sum_b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = n * (n - 1) / 2.0
    expected = sum_a * sum_b / total if total else 0.0
    denom = (sum_a + sum_b) / 2.0 - expected
    if denom == 0.0:
        return 1.0
    return (index - expected) / denom


def map_clusters(gt: GroundTruth, pred: Predictions, method: str = "hungarian") -> tuple[Predictions, ClusterMapping]:
    """Relabel ``cluster_<k>`` predictions with classes; also returns the mapping report.

    Predictions of unmapped clusters keep their cluster label, so the AP ignores them.
    """
    if method not in MAPPING_METHODS:
        raise ValueError(f"unknown mapping {method!r}; choose from {MAPPING_METHODS}")
    if pred.video_clusters is not None:
        video_cluster, source = dict(pred.video_clusters), "video_clusters"
    else:
        video_cluster, source = video_clusters_by_score(pred), "top_score"
    label_clusters = {cluster_id(lab) for lab in pred.labels}
    evaluated = set(gt.videos)
    video_cluster = {v: k for v, k in video_cluster.items() if v in evaluated}
    clusters, table = cluster_class_table(video_cluster, gt)
    extra = sorted(label_clusters - set(clusters))  # clusters with detections but no evaluated video
    if extra:
        clusters = clusters + extra
        table = np.vstack([table, np.zeros((len(extra), table.shape[1]), dtype=np.int64)])
    assign = hungarian_mapping(table) if method == "hungarian" else majority_mapping(table)
    cluster_to_class = {clusters[r]: gt.classes[c] for r, c in assign.items()}
    unmapped = tuple(k for k in clusters if k not in cluster_to_class)

    truth = video_majority_labels(gt)
    both = [v for v in gt.videos if v in truth and v in video_cluster]
    if both:
        cont = contingency_table([truth[v] for v in both], [video_cluster[v] for v in both])
        nmi, ari = normalized_mutual_info(cont), adjusted_rand_index(cont)
        nmi, ari = (None if math.isnan(x) else x for x in (nmi, ari))
    else:
        nmi = ari = None

    renamed = [cluster_to_class.get(cluster_id(lab), lab) for lab in pred.labels]
    vocab = tuple(dict.fromkeys(renamed))
    code = {name: i for i, name in enumerate(vocab)}
    remap = np.array([code[name] for name in renamed], dtype=np.int64)
    relabelled = replace(pred, labels=vocab, label=remap[pred.label] if len(pred) else pred.label)
    report = ClusterMapping(
        method=method,
        cluster_to_class=cluster_to_class,
        nmi=nmi,
        ari=ari,
        video_clusters_source=source,
        n_videos=len(both),
        unmapped_clusters=unmapped,
    )
    return relabelled, report
