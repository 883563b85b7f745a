"""Detection mAP (vectorised vs loop reference), Ambiguous filtering, cluster mapping, NMI/ARI, CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.evaluation import (
    adjusted_rand_index,
    ambiguous_overlap_mask,
    average_precision_detection,
    default_tiou_thresholds,
    evaluate_detection,
    load_ambiguous,
    normalized_mutual_info,
    parse_ground_truth,
    parse_predictions,
    reference_average_precision,
)
from models.evaluation.detection import pairwise_tiou
from models.evaluation.mapping import (
    contingency_table,
    hungarian_mapping,
    majority_mapping,
    video_clusters_by_score,
    video_majority_labels,
)
from models.evaluation.reference import reference_ambiguous_mask, reference_tiou

ROOT = Path(__file__).resolve().parents[1]
THUMOS_GT = ROOT / "configs/annotations/thumos14.json"
THUMOS_AMB = ROOT / "configs/annotations/thumos14_ambiguous_test.txt"


def gt_json(videos: dict[str, list[tuple[str, float, float]]], subset="test", version="v") -> dict:
    return {
        "version": version,
        "database": {
            v: {"subset": subset, "annotations": [{"label": c, "segment": [s, e]} for c, s, e in anns]}
            for v, anns in videos.items()
        },
    }


def pred_json(videos: dict[str, list[tuple[str, float, float, float]]], **extra) -> dict:
    return {
        "results": {
            v: [{"label": c, "score": sc, "segment": [s, e]} for c, sc, s, e in dets] for v, dets in videos.items()
        },
        **extra,
    }


def random_case(rng: np.random.Generator, scale: float = 1.0, shift: float = 0.0) -> tuple[dict, dict]:
    """Small integer grids make exact ties in scores and tIoU (and zero-length segments) common;
    ``scale``/``shift`` move the grid (negative or huge times exercise the search windows)."""
    n_videos, n_classes = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    gts: dict[str, list] = {}
    for v in range(n_videos):
        gts[f"v{v}"] = []
        for _ in range(int(rng.integers(0, 9))):  # some videos have no GT
            s = float(rng.integers(0, 24))
            e = s + float(rng.integers(0, 7))
            gts[f"v{v}"].append((f"c{rng.integers(n_classes)}", s * scale + shift, e * scale + shift))
    preds: dict[str, list] = {}
    for v in range(n_videos + 2):  # v{n}, v{n+1}: videos absent from the GT
        preds[f"v{v}"] = []
        for _ in range(int(rng.integers(0, 16))):
            s = float(rng.integers(0, 24))
            label = f"c{rng.integers(n_classes + 1)}"  # c{n}: a label absent from the GT
            e = s + float(rng.integers(0, 7))
            preds[f"v{v}"].append((label, float(rng.integers(0, 4)), s * scale + shift, e * scale + shift))
    return gt_json(gts), pred_json(preds)


THRESHOLDS = [0.1, 0.2, 0.25, 1 / 3, 0.5, 0.6, 0.75, 1.0]  # 0.25, 1/3, 0.5, 1.0 hit exact tIoU ties


# ---------------------------------------------------------------- vectorised == reference
def test_vectorised_equals_reference_on_random_cases():
    rng = np.random.default_rng(1234)
    checked = 0
    for i in range(400):
        scale, shift = [(1.0, 0.0), (0.1, -1.05), (3.7, 1e6)][i % 3]
        gt_d, pred_d = random_case(rng, scale, shift)
        gt = parse_ground_truth(gt_d)
        if not gt.classes:
            continue
        pred = parse_predictions(pred_d)
        thr = THRESHOLDS if i % 4 else [0.0, *THRESHOLDS]  # 0 matches even non-overlapping GT
        if i % 5 == 0:
            thr = list(rng.permutation(thr))  # any order is accepted
        fast = average_precision_detection(gt, pred, thr).ap
        ref = reference_average_precision(gt, pred, thr)
        assert fast.shape == ref.shape == (len(thr), len(gt.classes))
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-9)
        checked += 1
    assert checked > 300


def test_vectorised_equals_reference_on_real_thumos_test_subset():
    rng = np.random.default_rng(7)
    gt = parse_ground_truth(json.loads(THUMOS_GT.read_text()), "Test")
    classes, results = list(gt.classes), {}
    for v, c, s, e in zip(gt.video, gt.label, gt.start, gt.end):
        if rng.random() < 0.5:
            continue  # keep it small: about half of the GT, jittered
        d = e - s
        for _ in range(2):
            js, je = s + rng.normal(0, 0.3 * d), e + rng.normal(0, 0.3 * d)
            results.setdefault(gt.videos[v], []).append(
                {"label": classes[c], "score": float(rng.random()), "segment": [min(js, je), max(js, je)]}
            )
    for vid in gt.videos[:60]:
        for _ in range(10):
            s = float(rng.uniform(0, 200))
            results.setdefault(vid, []).append(
                {"label": classes[rng.integers(len(classes))], "score": float(rng.random()), "segment": [s, s + 5]}
            )
    pred = parse_predictions({"results": results})
    thr = default_tiou_thresholds(gt.version)
    np.testing.assert_allclose(
        average_precision_detection(gt, pred, thr).ap, reference_average_precision(gt, pred, thr), rtol=0, atol=1e-9
    )


# ---------------------------------------------------------------- the algorithm itself
def test_hand_computed_ap_interpolation():
    # 2 GT; ranked predictions TP, FP, TP -> precision 1, 1/2, 2/3 ; recall 1/2, 1/2, 1
    # right-monotone precision at the recall steps: 1 and 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3
    gt = gt_json({"a": [("x", 0, 10), ("x", 20, 30)]})
    pred = pred_json({"a": [("x", 0.9, 0, 10), ("x", 0.8, 50, 60), ("x", 0.7, 20, 30)]})
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.5])
    assert res.per_class_AP["x"][0] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_greedy_takes_highest_tiou_unmatched_gt():
    # GT A=[0,10], B=[2,12]. p1 (best score) = [0,9]: tIoU A 0.9, B 7/12 -> takes A.
    # p2 = [0,11]: A 10/11 (locked), B 0.75 -> TP at 0.5, FP at 0.8.
    # (Had p1 taken B, p2 would take A and be a TP at 0.8 as well.)
    assert reference_tiou(0, 11, 2, 12) == pytest.approx(0.75)
    gt = gt_json({"v": [("x", 0, 10), ("x", 2, 12)]})
    pred = pred_json({"v": [("x", 0.5, 0, 11), ("x", 0.9, 0, 9)]})
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.5, 0.8])
    assert res.per_class_AP["x"] == pytest.approx([1.0, 0.5])


def test_score_ties_keep_input_order():
    gt = gt_json({"v": [("x", 0, 10)]})
    first_hits = pred_json({"v": [("x", 0.5, 0, 10), ("x", 0.5, 40, 50)]})
    first_misses = pred_json({"v": [("x", 0.5, 40, 50), ("x", 0.5, 0, 10)]})
    assert evaluate_detection(gt, first_hits, tiou_thresholds=[0.5]).mAP == [1.0]
    assert evaluate_detection(gt, first_misses, tiou_thresholds=[0.5]).mAP == [0.5]


def test_class_without_predictions_scores_zero_and_counts_in_map():
    gt = gt_json({"v": [("x", 0, 10), ("y", 20, 30)]})
    res = evaluate_detection(gt, pred_json({"v": [("x", 1.0, 0, 10)]}), tiou_thresholds=[0.5, 0.7])
    assert res.per_class_AP == {"x": [1.0, 1.0], "y": [0.0, 0.0]}
    assert res.mAP == [0.5, 0.5] and res.average_mAP == 0.5


def test_predictions_outside_gt_videos_are_false_positives_unless_ignored():
    gt = gt_json({"v": [("x", 0, 10)]})
    gt["database"]["w"] = {"subset": "train", "annotations": [{"label": "x", "segment": [0, 10]}]}
    pred = pred_json({"w": [("x", 0.9, 0, 10)], "zzz": [("x", 0.8, 0, 10)], "v": [("x", 0.5, 0, 10)]})
    res = evaluate_detection(gt, pred, subset="test", tiou_thresholds=[0.5])
    assert res.mAP == [pytest.approx(1 / 3)]  # rank 3 TP after two FPs
    assert res.counts["outside_videos"] == 2
    res = evaluate_detection(gt, pred, subset="TEST", tiou_thresholds=[0.5], ignore_outside_videos=True)
    assert res.mAP == [1.0] and res.counts["ignored_outside_videos"] == 2


def test_unknown_labels_are_ignored():
    gt = gt_json({"v": [("x", 0, 10)]})
    pred = pred_json({"v": [("zebra", 0.9, 40, 50), ("x", 0.5, 0, 10)]})
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.5])
    assert res.mAP == [1.0] and res.counts["unknown_label"] == 1


def test_zero_length_segments_never_match():
    assert pairwise_tiou(np.array([5.0]), np.array([5.0]), np.array([5.0]), np.array([5.0]))[0] == 0.0
    assert reference_tiou(5.0, 5.0, 5.0, 5.0) == 0.0
    gt = gt_json({"v": [("x", 5, 5), ("x", 0, 10)]})
    pred = pred_json({"v": [("x", 0.9, 5, 5), ("x", 0.8, 0, 10)]})
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.1])
    assert res.mAP == [pytest.approx(0.5 * 0.5)]  # FP then TP, recall 1/2


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="ends before"):
        parse_predictions(pred_json({"v": [("x", 1.0, 5, 4)]}))
    with pytest.raises(ValueError, match="non-finite score"):
        parse_predictions(pred_json({"v": [("x", float("nan"), 0, 4)]}))
    with pytest.raises(ValueError, match="subset"):
        parse_ground_truth(gt_json({"v": [("x", 0, 1)]}), "validation")
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_detection(gt_json({"v": [("x", 0, 1)]}), pred_json({}), tiou_thresholds=[1.5])


def test_default_thresholds_and_paper_ranges():
    assert default_tiou_thresholds("Thumos14-30fps") == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    anet = default_tiou_thresholds("VERSION 1.2")
    assert len(anet) == 10 and anet[0] == 0.5 and anet[-1] == 0.95 and anet[3] == 0.65
    gt = gt_json({"v": [("x", 0, 10)]}, version="THUMOS14")
    pred = pred_json({"v": [("x", 1.0, 0, 6.5)]})  # tIoU 0.65: TP up to 0.6
    res = evaluate_detection(gt, pred)
    assert res.tiou == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert res.mAP == [1, 1, 1, 1, 1, 1, 0]
    assert res.average_mAP_ranges == pytest.approx({"0.1:0.5": 1.0, "0.3:0.7": 0.8, "0.1:0.7": 6 / 7})
    assert evaluate_detection(gt, pred, tiou_thresholds=[0.5, 0.75]).average_mAP_ranges == {}


# ---------------------------------------------------------------- Ambiguous
def test_ambiguous_file_and_mask_match_reference():
    amb = load_ambiguous(THUMOS_AMB)
    assert sum(len(v) for v in amb.values()) == 99
    assert amb["video_test_0000278"][0] == (0.0, 1.4)
    rng = np.random.default_rng(3)
    vids = list(amb)[:10] + ["not_ambiguous"]
    res = {}
    for v in vids:
        res[v] = []
        for _ in range(40):
            s = float(rng.uniform(0, 300))
            res[v].append({"label": "x", "score": 1.0, "segment": [s, s + float(rng.choice([0.0, 2.0, 20.0]))]})
    pred = parse_predictions({"results": res})
    fast, ref = ambiguous_overlap_mask(pred, amb), reference_ambiguous_mask(pred, amb)
    np.testing.assert_array_equal(fast, ref)
    assert 0 < fast.sum() < len(pred)


def test_ambiguous_filtering_drops_overlapping_false_positives():
    gt = gt_json({"v": [("x", 0, 10)]})
    pred = pred_json({"v": [("x", 0.9, 20, 30), ("x", 0.5, 0, 10)]})
    assert evaluate_detection(gt, pred, tiou_thresholds=[0.5]).mAP == [0.5]
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.5], ambiguous={"v": [(25.0, 40.0)]})
    assert res.mAP == [1.0] and res.counts["dropped_ambiguous"] == 1
    touching = evaluate_detection(gt, pred, tiou_thresholds=[0.5], ambiguous={"v": [(30.0, 40.0)]})
    assert touching.counts["dropped_ambiguous"] == 0  # sharing an end point is no overlap


# ---------------------------------------------------------------- NMI / ARI
def test_nmi_ari_hand_computed():
    true, pred = [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]
    table = contingency_table(true, pred)
    np.testing.assert_array_equal(table, [[2, 1, 0], [0, 1, 2]])
    # ARI: Σ C(n_ij,2) = 2, Σ C(a_i,2) = 6, Σ C(b_j,2) = 3, C(6,2) = 15 -> E = 1.2
    assert adjusted_rand_index(table) == pytest.approx((2 - 1.2) / (4.5 - 1.2), abs=1e-12)
    # NMI: I = 2 * (2/6) ln((2/6) / (3/6 * 2/6)) = (2/3) ln 2 ; H(U) = ln 2 ; H(V) = ln 3
    expected = (2 / 3) * math.log(2) / ((math.log(2) + math.log(3)) / 2)
    assert normalized_mutual_info(table) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.5158037429793889, abs=1e-12)


def test_nmi_ari_edge_cases():
    same = contingency_table([0, 0, 1, 1, 2], [5, 5, 3, 3, 9])  # same partition, other names
    assert normalized_mutual_info(same) == pytest.approx(1.0) and adjusted_rand_index(same) == 1.0
    one = contingency_table([0, 0, 0], [1, 1, 1])
    assert normalized_mutual_info(one) == 1.0 and adjusted_rand_index(one) == 1.0
    indep = contingency_table([0, 0, 1, 1], [0, 1, 0, 1])
    assert normalized_mutual_info(indep) == 0.0
    # ARI of independent 2x2: Σ C(n_ij,2)=0, Σa=2, Σb=2, C(4,2)=6 -> E=2/3 -> (0-2/3)/(2-2/3) = -0.5
    assert adjusted_rand_index(indep) == pytest.approx(-0.5)
    singletons = contingency_table([0, 1, 2], [0, 1, 2])
    assert adjusted_rand_index(singletons) == 1.0


# ---------------------------------------------------------------- cluster mapping
def test_hungarian_vs_majority_mapping():
    table = np.array([[5, 4], [6, 0]])  # rows: clusters, cols: classes
    assert hungarian_mapping(table) == {0: 1, 1: 0}  # 4 + 6 beats 5 + 0
    assert majority_mapping(table) == {0: 0, 1: 0}
    assert majority_mapping(np.array([[0, 0], [1, 3]])) == {1: 1}  # empty cluster stays unmapped


def test_video_clusters_inferred_from_scores_and_majority_labels():
    pred = parse_predictions(
        pred_json({"a": [("cluster_2", 0.5, 0, 1), ("cluster_1", 0.3, 0, 1), ("cluster_1", 0.3, 2, 3)],
                   "b": [("cluster_2", 0.4, 0, 1), ("cluster_1", 0.4, 1, 2)], "c": []})
    )
    assert video_clusters_by_score(pred) == {"a": 1, "b": 1}  # a: 0.6 > 0.5 ; b: tie -> smaller id
    gt = parse_ground_truth(gt_json({"a": [("y", 0, 1), ("x", 1, 2), ("x", 2, 3)], "b": [("y", 0, 1), ("x", 2, 3)]}))
    labels = video_majority_labels(gt)
    assert gt.classes[labels["a"]] == "x" and gt.classes[labels["b"]] == "y"  # b: tie -> first annotated


def test_utal_predictions_score_like_their_relabelled_equivalent():
    rng = np.random.default_rng(11)
    videos, classes = {}, ["p", "q", "r"]
    for i in range(9):
        c = classes[i % 3]
        videos[f"v{i}"] = [(c, float(s), float(s) + 4) for s in rng.choice(50, size=3, replace=False) * 2]
    gt = gt_json(videos)
    cluster_of = {"p": 7, "q": 3, "r": 5}
    labelled, clustered = {}, {}
    for v, anns in videos.items():
        labelled[v] = [(c, float(rng.random()), s + 0.5, e) for c, s, e in anns]
        clustered[v] = [(f"cluster_{cluster_of[c]}", sc, s, e) for c, sc, s, e in labelled[v]]
    ref = evaluate_detection(gt, pred_json(labelled), tiou_thresholds=[0.5, 0.9])
    vc = {v: cluster_of[a[0][0]] for v, a in videos.items()}
    for extra in ({"video_clusters": vc}, {}):
        res = evaluate_detection(gt, pred_json(clustered, **extra), tiou_thresholds=[0.5, 0.9])
        assert res.mAP == pytest.approx(ref.mAP, abs=1e-12)
        m = res.to_dict()["mapping"]
        assert m["cluster_to_class"] == {"cluster_3": "q", "cluster_5": "r", "cluster_7": "p"}
        assert m["nmi"] == pytest.approx(1.0) and m["ari"] == pytest.approx(1.0) and m["n_videos"] == 9
        assert m["video_clusters_source"] == ("video_clusters" if extra else "top_score")
    assert ref.mapping is None and ref.to_dict()["mapping"] is None


def test_more_clusters_than_classes_leaves_some_unmapped():
    gt = gt_json({"a": [("x", 0, 10)], "b": [("x", 0, 10)], "c": [("y", 0, 10)]})
    pred = pred_json({"a": [("cluster_0", 1.0, 0, 10)], "b": [("cluster_1", 1.0, 0, 10)],
                      "c": [("cluster_2", 1.0, 0, 10)]})
    res = evaluate_detection(gt, pred, tiou_thresholds=[0.5])
    assert res.mapping.cluster_to_class == {0: "x", 2: "y"} and res.mapping.unmapped_clusters == (1,)
    assert res.per_class_AP == {"x": [0.5], "y": [1.0]}  # cluster_1's detection is not scored
    maj = evaluate_detection(gt, pred, tiou_thresholds=[0.5], mapping="majority")
    assert maj.mapping.cluster_to_class == {0: "x", 1: "x", 2: "y"} and maj.mAP == [1.0]
    assert maj.mapping.ari == pytest.approx(adjusted_rand_index(contingency_table([0, 0, 1], [0, 1, 2])))


# ---------------------------------------------------------------- output and CLI
def test_json_and_table_contain_every_number(tmp_path):
    gt = gt_json({"v": [("x", 0, 10), ("y", 20, 30)]}, version="thumos")
    res = evaluate_detection(gt, pred_json({"v": [("x", 1.0, 0, 10)]}))
    d = json.loads(res.to_json())
    assert set(d) >= {"tiou", "mAP", "average_mAP", "per_class_AP", "mapping", "average_mAP_ranges"}
    assert d["per_class_AP"]["y"] == [0.0] * 7 and d["average_mAP"] == 0.5
    table = res.format_table()
    assert "mAP" in table and "50.00" in table and "0.1:0.5" in table


def test_cli_evaluate_writes_json(tmp_path):
    from clipae.cli import main

    gt = gt_json({"v": [("x", 0, 10)], "w": [("x", 5, 9)]}, subset="Test", version="Thumos14")
    pred = pred_json({"v": [("x", 0.9, 0, 10)], "w": [("x", 0.1, 30, 40)]})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    (tmp_path / "amb.txt").write_text("w 35.0 50.0\n")
    out = tmp_path / "out" / "eval.json"
    rc = main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
               "--subset", "Test", "--tiou", "0.3", "0.5", "--ambiguous", str(tmp_path / "amb.txt"),
               "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["tiou"] == [0.3, 0.5] and d["mAP"] == [0.5, 0.5] and d["counts"]["dropped_ambiguous"] == 1


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    from clipae.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt_json({"v": [("x", 0, 10)]})))
    (tmp_path / "pred.json").write_text(json.dumps(pred_json({"v": [("x", 1.0, 5, 4)]})))
    rc = main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")])
    assert rc == 2 and "ends before it starts" in capsys.readouterr().err


def test_predictions_for_none_of_the_ground_truth_videos_are_refused(tmp_path, capsys):
    """Predictions of another dataset scored 0 mAP with only a warning (a mapping over 0 videos)."""
    from clipae.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt_json({"v": [("x", 0, 10)], "w": [("x", 2, 4)]})))
    (tmp_path / "pred.json").write_text(json.dumps(pred_json({"other": [("x", 0.9, 0, 10)]})))
    rc = main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "none of the 1 predicted videos (e.g. 'other') is among the 2 ground-truth videos" in err, err
    (tmp_path / "pred2.json").write_text(json.dumps(pred_json({"other": [("x", 0.9, 0, 10)], "v": [("x", 0.8, 0, 10)]})))
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred2.json")]) == 0


def test_cli_dataset_defaults_on_real_thumos_gt(tmp_path, capsys):
    from clipae.cli import main

    gt = json.loads(THUMOS_GT.read_text())
    # Perfect predictions for the Test subset: every GT segment, score 1.
    results = {
        vid: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in e["annotations"]]
        for vid, e in gt["database"].items() if e["subset"] == "Test"
    }
    (tmp_path / "pred.json").write_text(json.dumps({"results": results}))
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--dataset", "thumos14", "--pred", str(tmp_path / "pred.json"),
               "--no-ambiguous", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["tiou"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] and d["subset"] == "Test"
    assert d["mAP"] == pytest.approx([1.0] * 7) and len(d["per_class_AP"]) == 20
    assert "average mAP (0.3:0.7): 100.00" in capsys.readouterr().out


def test_cli_wrongly_shaped_json_is_bad_input_naming_where(tmp_path, capsys):
    """A prediction JSON of the wrong shape gave an AttributeError traceback (exit 1); null labels passed."""
    from clipae.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt_json({"v": [("x", 0, 10)]})))
    det = {"label": "x", "score": 0.9, "segment": [1, 3]}
    cases = {
        "list.json": ({"results": []}, "prediction 'results': expected an object"),
        "dict.json": ({"results": {"v": det}}, "prediction v: expected a list of detections"),
        "null.json": ({"results": {"v": [{**det, "label": None}]}}, "prediction v #0: 'label' must be a string"),
        "str.json": ({"results": {"v": [{**det, "score": "high"}]}}, "prediction v #0: 'score' must be a number"),
        "bool.json": ({"results": {"v": [{**det, "score": True}]}}, "prediction v #0: 'score' must be a number"),
        "notdict.json": ({"results": {"v": [[1, 2]]}}, "prediction v #0: expected an object"),
        "clusters.json": ({"results": {"v": [det]}, "video_clusters": {"v": "a"}}, "its cluster must be a number"),
        "clusters2.json": ({"results": {"v": [det]}, "video_clusters": {"v": 1.5}}, "cluster must be an integer"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and name in err and "Traceback" not in err, err
    (tmp_path / "cut.json").write_text('{"results": {')
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "cut.json")]) == 2
    assert "predictions " + str(tmp_path / "cut.json") + ": not valid JSON" in capsys.readouterr().err
    (tmp_path / "gtbad.json").write_text(json.dumps({"database": {"v": {"subset": "t", "annotations": {}}}}))
    (tmp_path / "ok.json").write_text(json.dumps({"results": {"v": [det]}}))
    assert main(["evaluate", "--gt", str(tmp_path / "gtbad.json"), "--pred", str(tmp_path / "ok.json")]) == 2
    assert "ground truth v 'annotations': expected a list" in capsys.readouterr().err
    # --json checked before the work
    (tmp_path / "outdir").mkdir()
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "ok.json"),
                 "--json", str(tmp_path / "outdir")]) == 2
    out = capsys.readouterr()
    assert "is a directory" in out.err and "mAP" not in out.out
    # numpy scalars from Python callers are numbers
    from models.evaluation import parse_predictions

    p = parse_predictions({"results": {"v": [{**det, "score": np.float32(0.5)}]}, "video_clusters": {"v": np.int64(1)}})
    assert p.score.tolist() == [0.5] and p.video_clusters == {"v": 1}
    # and what other tools write: numeric strings, 0-d arrays, integral floats, numeric labels
    p = parse_predictions({"results": {"v": [{**det, "score": "0.25", "label": 3.0},
                                             {**det, "score": np.array(0.75)}]}, "video_clusters": {"v": "2"}})
    assert p.score.tolist() == [0.25, 0.75] and p.labels[0] == "3.0" and p.video_clusters == {"v": 2}


def test_a_huge_but_finite_time_costs_one_false_positive_not_the_whole_map():
    """Adversarial review: one extra detection ending at 1e306 s overflowed the search windows' keys, and every
    detection of every video stopped matching (mAP 100 -> 0, exit 0)."""
    gt = gt_json({"v1": [("a", 0, 10)], "v2": [("b", 5, 20)]})
    perfect = {"v1": [("a", 0.9, 0, 10)], "v2": [("b", 0.9, 5, 20)]}
    assert evaluate_detection(gt, pred_json(perfect), tiou_thresholds=[0.5]).average_mAP == 1.0
    perfect["v1"].append(("a", 0.1, 0, 1e308))  # (finite; the keys of 2 groups 1e308 apart are not)
    assert evaluate_detection(gt, pred_json(perfect), tiou_thresholds=[0.5]).average_mAP == 1.0


def test_segments_labels_and_thresholds_are_read_strictly(tmp_path, capsys):
    """Adversarial review: "12" was read as [1, 2], a third time dropped, [false, true] read as [0, 1], a
    401-digit number a traceback; "cluster_01", "cluster_3\\n" and "cluster_٣" merged into cluster 1 / 3;
    class labels with video_clusters said "not a cluster label"; --tiou 0.5 0.5 weighed 0.5 twice and an
    unsorted list printed a wrong range."""
    from clipae.cli import main

    det = {"label": "x", "score": 0.9, "segment": [1, 3]}
    for seg in ("12", [0.2, 1.1, 5], [False, True], {"0": 1, "1": 2}):
        with pytest.raises(ValueError, match="segment"):
            parse_predictions({"results": {"v": [{**det, "segment": seg}]}})
    assert parse_predictions({"results": {"v": [{**det, "segment": np.array([1.0, 3.0])}]}}).end.tolist() == [3.0]
    (tmp_path / "gt.json").write_text(json.dumps(gt_json({"v": [("x", 0, 10)]})))
    for name, data, message in [
        ("big.json", {"results": {"v": [{**det, "segment": [0, 10**400]}]}}, "is too large"),
        ("bigscore.json", {"results": {"v": [{**det, "score": 10**400}]}}, "is too large"),
        ("bigcl.json", {"results": {"v": [{**det, "label": "cluster_1"}]}, "video_clusters": {"v": 10**400}},
         "is too large"),
        ("hugecl.json", {"results": {"v": [{**det, "label": "cluster_99999999999999999999999"}]}},
         "not a cluster label"),
        ("classes.json", {"results": {"v": [det]}, "video_clusters": {"v": 0}}, "labels are class names"),
    ]:
        (tmp_path / name).write_text(json.dumps(data))
        assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, err)
    for odd in ("cluster_01", "cluster_3\n", "cluster_\u0663"):
        p = parse_predictions({"results": {"v": [{**det, "label": odd}]}})
        assert not p.is_clustered()  # (a class name, not a cluster)
    with pytest.raises(ValueError, match="repeat"):
        evaluate_detection(gt_json({"v": [("x", 0, 10)]}), pred_json({"v": [("x", 0.9, 0, 10)]}),
                           tiou_thresholds=[0.5, 0.5, 0.1])
    r = evaluate_detection(gt_json({"v": [("x", 0, 10)]}), pred_json({"v": [("x", 0.9, 0, 10)]}),
                           tiou_thresholds=[0.3, 0.7, 0.1])
    assert r.tiou == [0.1, 0.3, 0.7] and "average mAP (0.1:0.7)" in r.format_table()


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    from clipae.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(gt_json({"v": [("x", 0, 10)]})))
    (tmp_path / "ok.json").write_text(json.dumps(pred_json({"v": [("x", 0.9, 0, 10)]})))
    (tmp_path / "afile").write_text("")
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "ok.json"),
                 "--json", str(tmp_path / "afile" / "out.json")]) == 2
    out = capsys.readouterr()
    assert "is a file, not a folder" in out.err and "mAP" not in out.out
    assert main(["predict", "--checkpoint", str(tmp_path / "none"), "--store", str(tmp_path / "none.zarr"),
                 "--dataset", "thumos14", "--out", str(tmp_path / "afile" / "p.json")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "none"), "--store", str(tmp_path / "none.zarr"),
                 "--dataset", "thumos14", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
