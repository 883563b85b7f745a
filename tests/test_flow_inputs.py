"""extract-and-train: what would only fail after hours of extraction is checked before it, the flow's own
parameters cannot be overridden behind its back, and training, prediction and evaluation use exactly the
videos the store check found complete."""
from __future__ import annotations

import json

import pytest
import yaml

from clipae.demo_data import DEMO_CLASSES, DemoSpec

from flow_fixtures import FAST_TRAINING, demo_deployment_parameters, make_tiny_dataset


def _annotated(tmp_path, subsets=("train", "train", "test"), **cfg_changes):
    """A dataset YAML over a hand-written annotation file (no videos): v0, v1, ... in ``subsets``."""
    db = {f"v{i}": {"subset": s, "duration": 10.0,
                    "annotations": [{"label": DEMO_CLASSES[i % 2].name, "segment": [2.0, 5.0]}]}
          for i, s in enumerate(subsets)}
    (tmp_path / "ann.json").write_text(json.dumps({"version": "t", "database": db}))
    cfg = {"name": "t", "annotations": "ann.json", "train_subset": "train", "test_subset": "test",
           "tiou_thresholds": [0.3, 0.5], **cfg_changes}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "t.yaml")


def _training(**train):
    from flows.params import TrainingOptions

    return TrainingOptions(overrides={"train": train} if train else {}).build("cpu")


def test_subsets_and_the_models_features_are_checked_before_extraction(tmp_path):
    from flows import steps
    from storage.datasets import DatasetError

    ds = steps.load_dataset(_annotated(tmp_path))
    cfg = _training()
    needed, stored_only = steps.check_run_inputs(ds, cfg, ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"], "test")
    assert set(needed) == {"i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"} and stored_only == []
    # features the model reads but a new store would never hold: training failed after the extraction
    with pytest.raises(ValueError, match=r"the model also reads \['i3d_flow', 'clip_vitb16'\].*new store would never"):
        steps.check_run_inputs(ds, cfg, ["i3d_rgb", "vggish"], "test")
    # an existing store may hold them (a run adding audio to it): check-store decides per video
    assert steps.check_run_inputs(ds, cfg, ["vggish"], "test", store_exists=True)[1] == [
        "i3d_rgb", "i3d_flow", "clip_vitb16"]
    # an empty predicted subset (a typo): it failed after training, blaming the store
    typo = steps.load_dataset(_annotated(tmp_path, test_subset="Test"))
    with pytest.raises(ValueError, match=r"no video of subset 'Test' \(test_subset\).*subsets: \['test', 'train'\]"):
        steps.check_run_inputs(typo, cfg, ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"], "test")
    with pytest.raises(ValueError, match=r"subset 'train' has 2 videos; training needs at least 3"):
        steps.check_run_inputs(ds, cfg, ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"], "test", 3)
    only_train = steps.load_dataset(_annotated(tmp_path, subsets=("train", "train")))
    assert steps.check_run_inputs(only_train, cfg, ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"], "train")
    # the annotation file is read now, not when the store is checked after the extraction
    missing = steps.load_dataset(_annotated(tmp_path, annotations="nowhere.json"))
    with pytest.raises(DatasetError, match="nowhere.json does not exist"):
        steps.check_run_inputs(missing, cfg, ["i3d_rgb"], "test")


def test_a_bad_run_input_fails_before_any_video_is_extracted(tmp_path):
    from flows.extract_and_train import run_pipeline
    from flows.params import ExtractAndTrainParams

    cfg, videos = make_tiny_dataset(tmp_path)
    params = demo_deployment_parameters()
    params.update(dataset=str(cfg), source=str(videos), store=str(tmp_path / "s.zarr"),
                  runs_dir=str(tmp_path / "runs"), features=["i3d_rgb", "vggish"])
    with pytest.raises(ValueError, match="the model also reads"):
        run_pipeline(ExtractAndTrainParams(**params), orchestrated=False)
    assert not (tmp_path / "s.zarr").exists()
    (record,) = (tmp_path / "runs").glob("*/*/record.json")
    assert json.loads(record.read_text())["status"] == "failed"


def test_the_flows_own_parameters_cannot_be_overridden(tmp_path):
    """`extract.overrides.features` silently beat the `features` parameter (the plan and the record followed one,
    the extraction the other); `allow_random_weights` bypassed allow_random_init's opt-in; a grid override made
    every video fail as "not its fault" while the run completed on the old features."""
    from flows.steps import build_extract_config
    from storage import SnippetGrid

    grid = SnippetGrid(10.0, 8, 8)
    args = (["vggish"], None, "cpu", False, grid)
    for field, param in (("features", "features"), ("device", "device"),
                         ("allow_random_weights", "allow_random_init"), ("weights_dir", "weights_dir")):
        with pytest.raises(ValueError, match=rf"extract.overrides.{field}: set by the flow's own parameter '{param}'"):
            build_extract_config({field: "x"}, *args)
    with pytest.raises(ValueError, match=r"overrides.fps=5.0: the snippet grid comes from the dataset config \(fps=10"):
        build_extract_config({"fps": 5.0}, *args)
    with pytest.raises(ValueError, match=r"extract.overrides.tvl1: unknown keys \['nscale'\]"):
        build_extract_config({"tvl1": {"nscale": 1}}, *args)
    same = build_extract_config({"fps": 10, "stride": 8}, *args)  # (the dataset's own grid: harmless)
    assert (same.fps, same.stride, same.features) == (10.0, 8, ("vggish",))


def test_check_store_needs_a_video_per_class_and_one_to_predict(tmp_path):
    from types import SimpleNamespace

    from flows.steps import check_store
    from tests.store_helpers import small_store

    store = small_store(tmp_path / "s.zarr", ("t1", "t2", "x1"))
    ds = SimpleNamespace(name="d", train_subset="train", test_subset="test", num_classes=3,
                         videos=lambda subset: ["t1", "t2"] if subset == "train" else ["x1", "x2"])
    with pytest.raises(RuntimeError, match=r"2 complete training videos.*at least 3 are needed \(UTAL clusters"):
        check_store(store, ds, ["vggish"], min_train_videos=2)
    assert check_store(store, ds, ["vggish"], 2, "test", mode="weak").test_videos == ["x1"]
    ds.num_classes = 2
    ds.videos = lambda subset: ["t1", "t2"] if subset == "train" else ["x2"]
    with pytest.raises(RuntimeError, match="no complete video of 'd''s subset 'test' to predict"):
        check_store(store, ds, ["vggish"], min_train_videos=2)
    assert check_store(store, ds, ["vggish"], 2, "train").train_videos == ["t1", "t2"]


def test_only_the_predicted_videos_are_evaluated_and_the_rest_are_named(tmp_path):
    """Test videos listed in the annotations but absent from the store were scored as all missed: the run
    completed with half the mAP and said nothing."""
    from flows import steps

    ds = steps.load_dataset(_annotated(tmp_path, subsets=("train", "train", "test", "test")))
    pred = {"version": "t", "results": {"v2": [{"label": "cluster_0", "score": 0.9, "segment": [2.0, 5.0]}]},
            "external_data": {}}
    result = steps.evaluate(ds, pred, "test")
    assert result.average_mAP == pytest.approx(1.0) and len(result.per_class_AP) == 1  # (v3's class has no GT left)
    assert steps.not_evaluated(ds, pred, "test") == ["v3"]


def test_a_video_the_store_check_leaves_out_is_not_trained_on(tmp_path):
    """check-store found a training video incomplete (its features half extracted, its file since damaged) and
    left it out, but training loaded every stored training video and crashed on it."""
    from flows import steps
    from flows.extract_and_train import run_pipeline
    from flows.params import ExtractAndTrainParams

    spec = DemoSpec(train_per_class=2, test_per_class=1, duration=4.0, min_action_s=1.2, max_action_s=1.8,
                    max_instances=1, seed=7, classes=DEMO_CLASSES[:2])
    cfg, videos = make_tiny_dataset(tmp_path, spec)
    params = demo_deployment_parameters()
    params.update(dataset=str(cfg), source=str(videos), store=str(tmp_path / "s.zarr"),
                  runs_dir=str(tmp_path / "runs"), training=FAST_TRAINING, plot_videos=1)
    p = ExtractAndTrainParams(**params)
    ds = steps.load_dataset(p.dataset)
    victim = ds.videos(ds.train_subset)[0]
    path = videos / f"{victim}.mp4"
    store = steps.open_dataset_store(p.store, ds)
    partial = p.extract.build(["i3d_rgb"], p.weights_dir, p.device, p.allow_random_init, ds.grid)
    steps.extract_one(steps.PlannedVideo(victim, str(path), "new", steps.source_fingerprint(path)), store, partial)
    path.write_bytes(b"damaged since" * 100)

    out = run_pipeline(p, orchestrated=False)
    assert [f["video_id"] for f in out["failures"]] == [victim]
    run_dir = next((tmp_path / "runs").glob(f"*/{out['run_id']}"))
    trained_on = json.loads((run_dir / "model" / "train_clusters.json").read_text())
    assert sorted(trained_on) == [v for v in ds.videos(ds.train_subset) if v != victim]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["evaluation"] == {"subset": "test", "videos": 2, "not_evaluated": [], "classes": 2,
                                    "dataset_classes": 2}


def test_a_stored_video_whose_source_is_gone_is_used_only_while_its_features_are_current(tmp_path):
    """A listed file that could not be read (deleted after extraction to save space, a dangling link) failed the
    whole plan. Now a complete, current stored video keeps its features; one that lacks a feature or whose
    features are stale is planned, and fails alone in its task (check-store then leaves it out)."""
    from flows.steps import check_store, plan_extraction
    from tests.media import small_extract_config
    from tests.store_helpers import small_store

    store = small_store(tmp_path / "s.zarr", ("t1", "t2"))
    gone = [("t1", str(tmp_path / "t1.mp4")), ("t2", str(tmp_path / "t2.mp4")), ("new", str(tmp_path / "n.mp4"))]
    plan = plan_extraction(store, gone, ["i3d_rgb", "vggish"])
    assert plan.complete == ["t1", "t2"] and plan.unreadable == ["t1", "t2"]
    assert [(p.video_id, p.reason, p.source_fingerprint) for p in plan.todo] == [
        ("new", "new", "unreadable: No such file or directory")]
    assert plan.counts() == {"complete": 2, "new": 1, "stored, source unreadable": 2}
    (tmp_path / "w").mkdir()
    stale = plan_extraction(store, gone[:1], ["i3d_rgb"], small_extract_config(tmp_path / "w", features=("i3d_rgb",)))
    assert [(p.video_id, p.reason) for p in stale.todo] == [("t1", "stale-features")] and not stale.unreadable
    # a video whose extraction failed in this run is not used (what is stored no longer matches its file)
    from types import SimpleNamespace

    ds = SimpleNamespace(name="d", train_subset="train", test_subset="test", num_classes=1,
                         videos=lambda subset: ["t1", "t2"] if subset == "train" else ["t2"])
    assert check_store(store, ds, ["vggish"], 1, failed=["t1"]).train_videos == ["t2"]
