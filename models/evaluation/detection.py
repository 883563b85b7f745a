"""Vectorised ActivityNet detection AP/mAP (numpy), identical to ``reference.py`` to 1e-9.

The official algorithm is greedy: predictions of a class in descending score order,
each takes the unmatched GT of highest tIoU in its video if that tIoU ≥ threshold.
Only predictions that compete for the same GT segments depend on each other, so:

1. all (prediction, GT) pairs of the same class and video get their tIoU at once;
   pairs below the smallest threshold can never match and are dropped;
2. the remaining pairs form a bipartite graph whose connected components are
   independent matching problems (disjoint GT sets);
3. step ``r`` handles the r-th prediction (score order) of *every* component and
   *every* threshold in one batch of array ops — the loop runs only
   max(component size) times, not once per prediction;
4. AP needs precision only at true positives (recall changes only there, and the
   right-monotone precision peaks at a true positive), so it is a segmented suffix
   maximum over at most ``npos`` values per (threshold, class).
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from models.evaluation.io import GroundTruth, Predictions, codes_into


@dataclass(frozen=True)
class DetectionAP:
    """Per-class AP, ``ap[t, c]`` for ``tiou[t]`` and ``classes[c]``."""

    classes: tuple[str, ...]
    tiou: np.ndarray  # (T,)
    ap: np.ndarray  # (T, C)
    n_pred_used: int  # predictions whose label is a GT class
    n_pred_unknown_label: int  # ignored: label not among the GT classes
    n_pred_unknown_video: int  # counted as false positives: video not among the evaluated GT videos
    n_matching_steps: int  # sequential steps the greedy matching needed (diagnostic)

    @property
    def mean_ap(self) -> np.ndarray:
        """mAP per threshold: mean over the GT classes (a class without predictions counts 0)."""
        return self.ap.mean(axis=1) if self.ap.shape[1] else np.zeros(self.ap.shape[0])


def pairwise_tiou(p_start, p_end, g_start, g_end) -> np.ndarray:
    """Element-wise temporal IoU (ActivityNet ``segment_iou``, same float ops); 0 where
    the union is empty, i.e. both segments have zero length."""
    inter = np.maximum(np.minimum(p_end, g_end) - np.maximum(p_start, g_start), 0.0)
    union = (g_end - g_start) + (p_end - p_start) - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """For a sorted key array, the index where each element's run of equal keys begins."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=is_start[1:])
    return np.maximum.accumulate(np.where(is_start, np.arange(n), 0))


def _pairs(gt: GroundTruth, s_cls, s_start, s_end, s_vid, n_videos: int, min_threshold: float):
    """(prediction, GT) pairs of the same class and video that can reach ``min_threshold``.

    With a positive threshold only overlapping GT matter: sorted by start inside their
    (class, video) group, those lie in the window ``ps - Lmax < gs < pe`` (Lmax: longest GT
    of the group), found by binary search — this keeps the pair count near-linear for
    videos with hundreds of GT segments. Groups are laid side by side on one time axis
    (offset per group) so a single search serves all of them; the window is widened by a
    few ulps against rounding, extra pairs being harmless (the exact tIoU decides).
    Returns pred rows, GT rows (pred rows ascending).
    """
    n_cls = int(gt.label.max()) + 1 if len(gt) else 0
    g_key = gt.label * n_videos + gt.video
    g_order = np.lexsort((gt.start, g_key))  # by group, then start
    keys_sorted = g_key[g_order]
    uniq, first, counts = np.unique(keys_sorted, return_index=True, return_counts=True)
    n_groups = uniq.size
    in_gt = (s_vid >= 0) & (s_cls < n_cls)
    p_key = np.where(in_gt, s_cls * n_videos + s_vid, 0)
    if n_cls * n_videos <= 1 << 24:  # dense lookup table (class, video) -> group
        lut = np.full(max(n_cls * n_videos, 1), -1, dtype=np.int64)
        lut[uniq] = np.arange(n_groups)
        grp_all = np.where(in_gt, lut[p_key], -1)
    else:
        pos = np.minimum(np.searchsorted(uniq, p_key), max(n_groups - 1, 0))
        grp_all = np.where(in_gt & (uniq[pos] == p_key), pos, -1) if n_groups else np.full(p_key.size, -1)
    rows = np.flatnonzero(grp_all >= 0)
    grp = grp_all[rows]
    lo, hi = first[grp], first[grp] + counts[grp]
    if min_threshold > 0 and rows.size:
        starts = gt.start[g_order]
        g_len = np.maximum.reduceat(gt.end[g_order] - starts, first)
        lmax = float(g_len.max())
        t_lo = min(float(starts.min()), float(s_start[rows].min()))
        t_hi = max(float(gt.end.max()), float(s_end[rows].max()))
        span = (t_hi - t_lo) + 2.0 * lmax + 2.0
    if min_threshold > 0 and rows.size and math.isfinite(float(n_groups) * span + span):
        # (not with times so large that the keys overflow: one segment at 1e306 s made every window empty)
        offset = np.arange(n_groups) * span + (lmax + 1.0 - t_lo)
        keyed = starts + np.repeat(offset, counts)  # ascending: groups side by side
        margin = 8.0 * float(np.spacing(n_groups * span + span))
        o = offset[grp]
        lo_new = np.searchsorted(keyed, (s_start[rows] - g_len[grp]) + o - margin, "left")
        hi_new = np.searchsorted(keyed, s_end[rows] + o + margin, "left")
        lo = np.clip(lo_new, lo, hi)
        hi = np.clip(hi_new, lo, hi)
    n = hi - lo
    pair_pred = np.repeat(rows, n)
    within = np.arange(pair_pred.size) - np.repeat(np.cumsum(n) - n, n)
    pair_gt = g_order[np.repeat(lo, n) + within]
    return pair_pred, pair_gt


def greedy_match(
    n_pred: int, n_gt: int, pair_pred: np.ndarray, pair_gt: np.ndarray, tiou: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, int]:
    """True-positive flags (T, n_pred) of the official greedy matching.

    ``pair_pred`` (ascending) indexes predictions already in processing order (class, then
    descending score); a prediction takes the unlocked GT of highest tIoU (ties: lowest GT
    row) among its pairs with tIoU ≥ threshold; ``thresholds`` must be ascending. Returns
    the flags and the number of sequential steps.
    """
    n_thr = thresholds.size
    tp = np.zeros((n_thr, n_pred), dtype=bool)
    keep = tiou >= thresholds.min()
    pair_pred, pair_gt, tiou = pair_pred[keep], pair_gt[keep], tiou[keep]
    if pair_pred.size == 0:
        return tp, 0
    # Runs of equal pair_pred are the candidates (predictions that can match something).
    run_start = np.empty(pair_pred.size, dtype=bool)
    run_start[0] = True
    np.not_equal(pair_pred[1:], pair_pred[:-1], out=run_start[1:])
    cand = pair_pred[run_start]
    cand_of_pair = np.cumsum(run_start) - 1
    n_cand = cand.size
    col = np.arange(pair_pred.size) - _run_starts(cand_of_pair)
    width = int(col.max()) + 1
    # Each candidate's GT list in walk order: descending tIoU, ties by GT row. Column
    # ``width`` is a sentinel pointing at dummy GT ``n_gt``: "no GT left" -> false positive.
    walk_tiou = np.full((n_cand, width + 1), -np.inf)
    walk_gt = np.full((n_cand, width + 1), n_gt, dtype=np.int64)
    walk_tiou[cand_of_pair, col] = tiou
    walk_gt[cand_of_pair, col] = pair_gt
    by_walk = np.lexsort((walk_gt[:, :width], -walk_tiou[:, :width]), axis=-1)
    walk_tiou[:, :width] = np.take_along_axis(walk_tiou[:, :width], by_walk, axis=1)
    walk_gt[:, :width] = np.take_along_axis(walk_gt[:, :width], by_walk, axis=1)
    # Independent sub-problems: connected components of the candidate–GT graph.
    graph = coo_matrix(
        (np.ones(pair_pred.size, dtype=np.int8), (cand_of_pair, n_cand + pair_gt)), shape=(n_cand + n_gt,) * 2
    )
    _, comp = connected_components(graph, directed=False)
    comp = comp[:n_cand]
    by_comp = np.argsort(comp, kind="stable")  # candidate order == processing order
    step = np.empty(n_cand, dtype=np.int64)
    step[by_comp] = np.arange(n_cand) - _run_starts(comp[by_comp])
    by_step = np.argsort(step, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(step)))).tolist()
    # Rows laid out step by step so each step reads contiguous slices. n_reach[c, k]: how many
    # of the (ascending) thresholds walk entry k reaches; free[g, t]: GT g unmatched at t.
    walk_tiou[:, width] = np.inf  # the sentinel reaches every threshold
    n_reach = np.searchsorted(thresholds, walk_tiou[by_step], side="right")
    n_reach = n_reach.astype(np.int8 if n_thr < 127 else np.int32)[:, :, None]
    walk_gt = walk_gt[by_step]
    free = np.ones((n_gt + 1, n_thr), dtype=bool)
    chosen_col = np.empty((n_cand, n_thr), dtype=np.int64)
    rows = np.arange(max(np.diff(bounds)))[:, None]
    t_cols = np.arange(n_thr)[None, :]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        gv = walk_gt[lo:hi]  # (A, K+1)
        best = ((n_reach[lo:hi] > t_cols) & free[gv]).argmax(axis=1)  # first free GT in walk order, (A, T)
        free[gv[rows[: hi - lo], best], t_cols] = False
        free[n_gt] = True  # the sentinel stays available
        chosen_col[lo:hi] = best
    tp[:, cand[by_step]] = (chosen_col != width).T
    return tp, len(bounds) - 1


def interpolated_ap_from_tp(tp: np.ndarray, s_cls: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """All-point interpolated AP (ActivityNet ``interpolated_prec_rec``) for every
    (threshold, class) at once from TP flags ``tp`` (T, N) of class-sorted predictions.

    Recall rises only at a TP (k-th TP of a class at rank i: recall k/npos, precision
    k/(i+1)), and the right-monotone precision there is the max over later TPs, so
    AP = Σ_k (k/npos − (k−1)/npos) · max_{k' ≥ k} precision_{k'}.
    """
    n_thr, n = tp.shape
    n_cls = npos.size
    ap = np.zeros((n_thr, n_cls))
    t_idx, p_idx = np.nonzero(tp)  # row-major: by threshold, then class, then rank
    if t_idx.size == 0:
        return ap
    class_start = np.searchsorted(s_cls, np.arange(n_cls))
    cls = s_cls[p_idx]
    rank = p_idx - class_start[cls]
    key = t_idx * n_cls + cls
    k = (np.arange(key.size) - _run_starts(key)) + 1
    precision = k / (rank + 1.0)
    denom = npos[cls].astype(np.float64)
    d_recall = k / denom - (k - 1) / denom
    prec_table = np.zeros((n_thr * n_cls, int(k.max())))
    prec_table[key, k - 1] = precision
    suffix_max = np.maximum.accumulate(prec_table[:, ::-1], axis=1)[:, ::-1]
    ap_flat = np.bincount(key, weights=d_recall * suffix_max[key, k - 1], minlength=n_thr * n_cls)
    return ap_flat.reshape(n_thr, n_cls)


def average_precision_detection(gt: GroundTruth, pred: Predictions, tiou_thresholds) -> DetectionAP:
    """ActivityNet detection AP for every GT class and threshold (vectorised).

    Predictions whose label is not a GT class are ignored; those in videos without GT
    of their class — including videos outside the evaluated subset, as in the official
    code — are false positives. Score ties keep input order (stable sort).
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0:
        raise ValueError("need at least one tIoU threshold")
    n_cls = len(gt.classes)
    p_cls_all = codes_into(pred.labels, gt.classes)[pred.label] if len(pred) else np.zeros(0, np.int64)
    p_vid_all = codes_into(pred.videos, gt.videos)[pred.video] if len(pred) else np.zeros(0, np.int64)
    known = np.flatnonzero(p_cls_all >= 0)
    # Two stable sorts = class-major, descending score, ties in input order (the class
    # pass is a radix sort on small ints, cheaper than one lexsort).
    by_score = known[np.argsort(-pred.score[known], kind="stable")]
    cls_key = p_cls_all[by_score].astype(np.int16 if n_cls < 32768 else np.int64)
    order = by_score[np.argsort(cls_key, kind="stable")]
    s_cls, s_vid = p_cls_all[order], p_vid_all[order]
    s_start, s_end = pred.start[order], pred.end[order]
    pair_pred, pair_gt = _pairs(gt, s_cls, s_start, s_end, s_vid, len(gt.videos), float(thresholds.min()))
    tiou = pairwise_tiou(s_start[pair_pred], s_end[pair_pred], gt.start[pair_gt], gt.end[pair_gt])
    by_thr = np.argsort(thresholds, kind="stable")
    tp_sorted, n_steps = greedy_match(order.size, len(gt), pair_pred, pair_gt, tiou, thresholds[by_thr])
    tp = np.empty_like(tp_sorted)
    tp[by_thr] = tp_sorted
    npos = np.bincount(gt.label, minlength=n_cls)
    ap = interpolated_ap_from_tp(tp, s_cls, npos)
    return DetectionAP(
        classes=gt.classes,
        tiou=thresholds,
        ap=ap,
        n_pred_used=int(order.size),
        n_pred_unknown_label=int(len(pred) - known.size),
        n_pred_unknown_video=int(np.count_nonzero(s_vid < 0)),
        n_matching_steps=n_steps,
    )
