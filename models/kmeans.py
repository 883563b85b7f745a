"""Seeded k-means with k-means++ initialisation (numpy; scikit-learn is not a dependency)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class KMeansResult:
    labels: np.ndarray      # (N,) int
    centers: np.ndarray     # (K, D)
    inertia: float


def _sq_dists(x: np.ndarray, c: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Squared distances (N, K); ``x2``: the rows' squared norms, when the caller has them (N x D work each)."""
    x2 = (x * x).sum(1) if x2 is None else x2
    return np.maximum(x2[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :], 0.0)


def kmeans_plus_plus_init(x: np.ndarray, k: int, rng: np.random.Generator, x2: np.ndarray | None = None) -> np.ndarray:
    """Arthur & Vassilvitskii 2007: each next centre drawn with probability proportional to D(x)^2."""
    x2 = (x * x).sum(1) if x2 is None else x2
    centers = [x[rng.integers(len(x))]]
    d2 = _sq_dists(x, centers[0][None], x2)[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        idx = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centers.append(x[idx])
        d2 = np.minimum(d2, _sq_dists(x, x[idx][None], x2)[:, 0])
    return np.stack(centers)


def centers_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of each cluster's points (an empty cluster gets the overall mean; Lloyd re-seeds it)."""
    c = np.tile(x.mean(0), (k, 1))
    for j in range(k):
        if (labels == j).any():
            c[j] = x[labels == j].mean(0)
    return c


def kmeans(x: np.ndarray, k: int, seed: int = 0, restarts: int = 8, iters: int = 100, tol: float = 1e-6,
           init_labels: np.ndarray | None = None) -> KMeansResult:
    """Lloyd iterations from ``restarts`` k-means++ seeds; the lowest-inertia run wins. Empty clusters
    are re-seeded with the point farthest from its centre, so every one of the K clusters is used.

    ``init_labels``: one warm-started run from the centres of this partition instead (UTAL refinement:
    the previous round's clusters move only where the new features say so; no restarts)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"k-means: {len(x)} points for {k} clusters")
    rng = np.random.default_rng(seed)
    x2 = (x * x).sum(1)
    best: KMeansResult | None = None
    for _ in range(1 if init_labels is not None else max(1, restarts)):
        c = (centers_of(x, np.asarray(init_labels), k) if init_labels is not None
             else kmeans_plus_plus_init(x, k, rng, x2))
        prev = np.inf
        for _ in range(iters):
            d2 = _sq_dists(x, c, x2)
            lab = d2.argmin(1)
            inertia = float(d2[np.arange(len(x)), lab].sum())
            for j in range(k):
                members = lab == j
                if members.any():
                    c[j] = x[members].mean(0)
                else:
                    far = int(d2[np.arange(len(x)), lab].argmax())
                    c[j] = x[far]
                    lab[far] = j
            # (converged: the assignment's inertia stopped falling. Not on the first pass: inf - inertia <= tol * inf
            # held there, so every run stopped after one Lloyd iteration)
            if np.isfinite(prev) and prev - inertia <= tol * max(prev, 1e-12):
                break
            prev = inertia
        d2 = _sq_dists(x, c, x2)
        lab = d2.argmin(1)
        res = KMeansResult(lab, c, float(d2[np.arange(len(x)), lab].sum()))
        if best is None or res.inertia < best.inertia:
            best = res
    return best


def align_clusters(new: np.ndarray, old: np.ndarray, k: int) -> np.ndarray:
    """Relabel ``new`` cluster ids to agree as much as possible with ``old`` (Hungarian on the overlap),
    so the classifier's K outputs keep their meaning from one UTAL round to the next."""
    overlap = np.zeros((k, k))
    np.add.at(overlap, (new, old), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[new]


def video_level_features(videos, names: list[str], weights: list[np.ndarray] | None = None) -> np.ndarray:
    """UTAL clustering input: per feature, pool over time, L2-normalise; concatenate.

    Round 0 pools uniformly; later rounds pass ``weights`` (each video's (T,) foreground attention from
    the localizer) so the video-level feature is dominated by its action snippets, not scene/background."""
    def pool(a: np.ndarray, i: int) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if weights is None:
            return a.mean(0)
        w = np.asarray(weights[i], dtype=np.float64)
        if not w.sum() > 1e-9:  # (a 1-snippet video, or a flat attention, normalises to all zeros: pool uniformly,
            return a.mean(0)    # not into a zero vector that every such video would share)
        return (w[:, None] * a).sum(0) / w.sum()

    parts = []
    for n in names:
        m = np.stack([pool(v.features[n], i) for i, v in enumerate(videos)])
        m /= np.linalg.norm(m, axis=1, keepdims=True).clip(min=1e-12)
        parts.append(m)
    return np.concatenate(parts, axis=1)
