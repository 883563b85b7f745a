"""Dataset configs built on the real THUMOS'14 and ActivityNet v1.2 annotation files, and user datasets."""
from __future__ import annotations

import json

import pytest

from storage.datasets import DatasetError, load_dataset


def test_thumos14_protocol():
    ds = load_dataset("thumos14")
    assert ds.num_classes == 20 and ds.classes[0] == "BaseballPitch"
    assert len(ds.videos("Validation")) == 200 and len(ds.videos("Test")) == 212
    assert (ds.train_subset, ds.test_subset) == ("Validation", "Test")
    assert ds.tiou_thresholds == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    amb = ds.ambiguous()
    assert sum(len(v) for v in amb.values()) == 99 and all(v.startswith("video_test_") for v in amb)
    a = ds.annotations("video_test_0000004")
    assert a.subset == "Test" and a.duration == pytest.approx(33.83) and a.labels == ["CricketBowling", "CricketShot"]
    gt = ds.ground_truth_json()
    assert len(gt["database"]) == 412 and gt["database"]["video_test_0000004"]["annotations"][0]["segment"] == [0.2, 1.1]


def test_activitynet12_protocol():
    ds = load_dataset("activitynet12")
    assert ds.num_classes == 100
    assert len(ds.videos("training")) == 4441 and len(ds.videos("validation")) == 2198
    assert ds.tiou_thresholds[0] == 0.5 and ds.tiou_thresholds[-1] == 0.95 and len(ds.tiou_thresholds) == 10
    assert ds.ambiguous() == {}


def test_user_dataset_from_any_annotation_file(tmp_path):
    ann = {"version": "mine", "database": {
        "clip1": {"subset": "train", "duration": 10.0, "annotations": [{"label": "jump", "segment": [1, 2]}]},
        "clip2": {"subset": "eval", "duration": 8.0, "annotations": [{"label": "wave", "segment": [3, 4]},
                                                                      {"label": "jump", "segment": [5, 6]}]},
    }}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nannotations: ann.json\ntrain_subset: train\ntest_subset: eval\n"
        "tiou_thresholds: [0.5]\ngrid: {fps: 10.0, snippet_frames: 8, stride: 8}\n")
    ds = load_dataset(tmp_path / "mine.yaml")
    assert ds.classes == ["jump", "wave"] and ds.num_classes == 2
    assert ds.videos("eval") == ["clip2"] and ds.grid.fps == 10.0


def test_a_malformed_dataset_config_is_named_with_what_is_wrong(tmp_path):
    """A list, a bad grid key, a YAML syntax error or no thresholds gave raw AttributeError/TypeError/ParserError
    (or failed in the evaluation, after training) without naming the file."""
    base = "annotations: a.json\ntrain_subset: a\ntest_subset: b\n"
    cases = {
        "list.yaml": ("- a\n- b\n", "must be a mapping"),
        "grid.yaml": (base + "tiou_thresholds: [0.5]\ngrid: {snippet: 8}\n", "unexpected keyword argument 'snippet'"),
        "syntax.yaml": (base + "tiou_thresholds: [0.5\n", "not valid YAML"),
        "empty.yaml": (base + "tiou_thresholds: []\n", r"tiou_thresholds must be a non-empty list"),
        "range.yaml": (base + "tiou_thresholds: [0.5, 1.5]\n", r"distinct numbers in \(0, 1\]"),
        "words.yaml": (base + "tiou_thresholds: [high]\n", "could not convert"),
        "grid0.yaml": (base + "tiou_thresholds: [0.5]\ngrid: {fps: 0}\n", "must be positive"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DatasetError, match=rf"dataset config {tmp_path / name}: .*{message}"):
            load_dataset(tmp_path / name)


def test_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope'.*thumos14"):
        load_dataset("nope")
    (tmp_path / "bad.yaml").write_text("name: bad\nannotations: missing.json\ntrain_subset: a\ntest_subset: b\ntiou_thresholds: [0.5]\n")
    ds = load_dataset(tmp_path / "bad.yaml")
    with pytest.raises(DatasetError, match="missing.json does not exist"):
        ds.videos()
    (tmp_path / "nokey.yaml").write_text("name: x\nannotations: a.json\n")
    with pytest.raises(DatasetError, match="missing key 'train_subset'"):
        load_dataset(tmp_path / "nokey.yaml")
