"""`clipae import-features`: BaS-Net/CASE, ActionFormer and generic layouts, annotation checks, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipae.cli import main as cli
from storage import FeatureStore, StoreError
from storage.datasets import load_dataset
from storage.grid import SnippetGrid
from storage.importers import LAYOUT_GRIDS, discover, import_features

THUMOS_TRAIN = ["video_validation_0000051", "video_validation_0000052"]
THUMOS_TEST = ["video_test_0000004"]


def _npy(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def _snippets(vid, grid):
    """What the published features hold for ``vid``: its annotated duration cut into ``grid``'s snippets."""
    return grid.num_snippets(int(round(load_dataset("thumos14").annotations(vid).duration * grid.fps)))


def _basnet_tree(root, rng):
    data = {}
    for split, vids in (("train", THUMOS_TRAIN), ("test", THUMOS_TEST)):
        for vid in vids:
            t = _snippets(vid, LAYOUT_GRIDS["basnet"]) - int(rng.integers(0, 2))  # (a snippet short: tolerated)
            rgb, flow = rng.random((t, 1024), dtype=np.float32), rng.random((t, 1024), dtype=np.float32)
            _npy(root / split / "rgb" / f"{vid}.npy", rgb)
            _npy(root / split / "flow" / f"{vid}.npy", flow)
            data[vid] = (rgb, flow)
    return data


def test_basnet_layout_round_trip_and_annotation_report(tmp_path):
    data = _basnet_tree(tmp_path / "features", np.random.default_rng(0))
    store = FeatureStore.create(tmp_path / "s.zarr")
    ds = load_dataset("thumos14")
    rep = import_features(store, "basnet", tmp_path / "features", dataset=ds, progress=False)
    assert sorted(rep.imported) == sorted(data) and not rep.failed
    assert len(rep.missing) == len(ds.videos()) - 3 and rep.not_annotated == []
    for vid, (rgb, flow) in data.items():
        got = store.load(vid)
        np.testing.assert_array_equal(got["i3d_rgb"], rgb)
        np.testing.assert_array_equal(got["i3d_flow"], flow)
        info = store.video_info(vid)
        assert info.duration == ds.annotations(vid).duration
        assert store.provenance(vid)["i3d_rgb"].extractor == "import:basnet"
    # importing again skips unchanged videos; a changed file is re-imported
    rep2 = import_features(store, "basnet", tmp_path / "features", dataset=ds, progress=False)
    assert sorted(rep2.skipped) == sorted(data) and rep2.imported == []
    vid = THUMOS_TEST[0]
    t = data[vid][0].shape[0]
    _npy(tmp_path / "features" / "test" / "rgb" / f"{vid}.npy", np.zeros((t, 1024), np.float32))
    rep3 = import_features(store, "basnet", tmp_path / "features", progress=False)
    assert rep3.imported == [vid]
    assert store.load(vid, ["i3d_rgb"])["i3d_rgb"].sum() == 0


def test_basnet_missing_stream_fails_only_that_video(tmp_path):
    data = _basnet_tree(tmp_path / "f", np.random.default_rng(1))
    (tmp_path / "f" / "train" / "flow" / f"{THUMOS_TRAIN[0]}.npy").unlink()
    store = FeatureStore.create(tmp_path / "s.zarr")
    rep = import_features(store, "basnet", tmp_path / "f", progress=False)
    assert set(rep.failed) == {THUMOS_TRAIN[0]} and "flow file missing" in rep.failed[THUMOS_TRAIN[0]]
    assert sorted(store.list_videos()) == sorted(set(data) - {THUMOS_TRAIN[0]})


def test_actionformer_layout_splits_rgb_flow_on_its_own_grid(tmp_path, capsys):
    """ActionFormer's THUMOS'14 features: the videos' 30 fps, 16-frame windows every 4 frames. Imported on the
    dataset's 25 fps / stride 16 grid (the old default) their times came out 4-4.8x too long."""
    rng = np.random.default_rng(2)
    vid = "video_test_0000004"  # 33.83 s at 30 fps: 250 windows
    grid = LAYOUT_GRIDS["actionformer"]
    assert grid == SnippetGrid(30.0, 16, 4) and _snippets(vid, grid) == 250
    both = rng.random((250, 2048), dtype=np.float32)
    src = tmp_path / "af"
    _npy(src / f"{vid}.npy", both)
    _npy(src / "not_in_thumos.npy", rng.random((10, 2048), dtype=np.float32))
    _npy(src / "bad_dims.npy", rng.random((10, 1000), dtype=np.float32))
    # a 25 fps THUMOS video: ActionFormer keeps its own rate, so on the 30 fps grid its times would be x0.83
    assert load_dataset("thumos14").annotations("video_test_0000950").fps == 25
    _npy(src / "video_test_0000950.npy", rng.random((_snippets("video_test_0000950", SnippetGrid(25.0, 16, 4)), 2048),
                                                    dtype=np.float32))
    assert cli(["import-features", "--layout", "actionformer", "--src", str(src), "--store", str(tmp_path / "s.zarr"),
                "--dataset", "thumos14", "--no-progress"]) == 1  # (a video failed)
    out = capsys.readouterr().out
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.grid == grid and sorted(store.list_videos()) == ["not_in_thumos", vid]
    assert "FAILED bad_dims" in out and "(T, 2048)" in out
    assert "FAILED video_test_0000950: video 'video_test_0000950': 8218 snippets" in out and "make 9862" in out and "the video is 25 fps" in out
    got = store.load(vid)
    np.testing.assert_array_equal(got["i3d_rgb"], both[:, :1024])
    np.testing.assert_array_equal(got["i3d_flow"], both[:, 1024:])
    times = store.load(vid, ["time"])["time"]
    assert times[0] == pytest.approx(8 / 30) and times[-1] == pytest.approx((249 * 4 + 8) / 30)  # within 33.83 s
    info = store.video_info(vid)
    assert info.fps == 30.0 and info.num_frames == round(33.83 * 30) and info.duration == pytest.approx(33.83, abs=0.01)


def test_actionformer_activitynet_v_prefix_is_read_as_the_annotated_id(tmp_path):
    ds = load_dataset("activitynet12")
    vid = "_-JNaelSKO8"  # also: a YouTube id starting with '_' is a valid store id
    ann = ds.annotations(vid)
    grid = SnippetGrid(float(ann.fps or 30.0), 16, 16)
    _npy(tmp_path / "af" / f"v_{vid}.npy", np.zeros((grid.num_snippets(int(round(ann.duration * grid.fps))), 2048),
                                                   np.float32))
    store = FeatureStore.create(tmp_path / "s.zarr", grid=grid)
    rep = import_features(store, "actionformer", tmp_path / "af", dataset=ds, progress=False)
    assert rep.imported == [vid] and not rep.failed and store.list_videos() == [vid]


def test_generic_layout_adds_clip_and_audio_to_existing_videos(tmp_path):
    rng = np.random.default_rng(3)
    _basnet_tree(tmp_path / "f", rng)
    store = FeatureStore.create(tmp_path / "s.zarr")
    import_features(store, "basnet", tmp_path / "f", progress=False)
    for vid in store.list_videos():
        t = store.num_snippets(vid)
        _npy(tmp_path / "clip" / f"{vid}.npy", rng.random((t, 512), dtype=np.float32))
        _npy(tmp_path / "audio" / f"{vid}.npy", rng.random((t, 128), dtype=np.float32))
    _npy(tmp_path / "clip" / "nan_video.npy", np.full((4, 512), np.nan, np.float32))
    rep = import_features(store, "generic", tmp_path / "clip", feature="clip_vitb16", progress=False)
    assert "nan_video" in rep.failed and "NaN/Inf" in rep.failed["nan_video"]
    rep = import_features(store, "generic", tmp_path / "audio", feature="vggish", progress=False)
    assert not rep.failed
    for vid in store.list_videos():
        assert store.features_of(vid) == {"i3d_rgb", "i3d_flow", "clip_vitb16", "vggish", "audio_mask"}
    with pytest.raises(StoreError, match="--feature"):
        discover("generic", tmp_path / "clip")


def test_generic_wrong_length_is_reported(tmp_path):
    rng = np.random.default_rng(4)
    _basnet_tree(tmp_path / "f", rng)
    store = FeatureStore.create(tmp_path / "s.zarr")
    import_features(store, "basnet", tmp_path / "f", progress=False)
    vid = THUMOS_TEST[0]
    _npy(tmp_path / "clip" / f"{vid}.npy", rng.random((store.num_snippets(vid) + 3, 512), dtype=np.float32))
    rep = import_features(store, "generic", tmp_path / "clip", feature="clip_vitb16", progress=False)
    assert vid in rep.failed and "already stored" in rep.failed[vid]


def test_cli_import_and_store_info(tmp_path, capsys):
    _basnet_tree(tmp_path / "f", np.random.default_rng(5))
    rc = cli(["import-features", "--layout", "basnet", "--src", str(tmp_path / "f"), "--store",
              str(tmp_path / "s.zarr"), "--dataset", "thumos14", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "imported 3" in out and "annotated videos have no features" in out
    assert cli(["store", "info", str(tmp_path / "s.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == 3 and info["grid"]["fps"] == 25.0
    assert cli(["store", "verify", str(tmp_path / "s.zarr")]) == 0
    assert "0 mismatches" in capsys.readouterr().out
    assert cli(["import-features", "--layout", "basnet", "--src", str(tmp_path / "nope"), "--store",
                str(tmp_path / "s.zarr")]) == 2


def test_import_source_checked_before_a_store_is_created(tmp_path, capsys):
    assert cli(["import-features", "--layout", "basnet", "--src", str(tmp_path / "nope"), "--store",
                str(tmp_path / "new.zarr")]) == 2
    assert "import source" in capsys.readouterr().err and not (tmp_path / "new.zarr").exists()


def test_import_refuses_zero_grid_values_and_unknown_features_before_creating_a_store(tmp_path, capsys):
    """--fps 0 / --stride 0 were taken as "not given" (the layout's default grid); an unknown --feature and an
    empty source created the store before failing."""
    src = tmp_path / "npy"
    _npy(src / "v1.npy", np.zeros((5, 128), np.float32))
    (tmp_path / "empty").mkdir()
    base = ["import-features", "--layout", "generic", "--src", str(src), "--store", str(tmp_path / "s.zarr")]
    for extra, message in ((["--feature", "vggish", "--fps", "0"], "fps, snippet_frames and stride must be positive"),
                           (["--feature", "vggish", "--stride", "0"], "must be positive"),
                           (["--feature", "foo"], "--feature 'foo': not a feature")):
        assert cli(base + extra) == 2, extra
        assert message in capsys.readouterr().err
        assert not (tmp_path / "s.zarr").exists()
    assert cli(["import-features", "--layout", "basnet", "--src", str(tmp_path / "empty"), "--store",
                str(tmp_path / "s.zarr")]) == 2
    assert "BaS-Net layout" in capsys.readouterr().err and not (tmp_path / "s.zarr").exists()
    assert cli(base + ["--feature", "vggish"]) == 0


def test_an_import_on_the_wrong_grid_reports_compactly_and_leaves_no_empty_store(tmp_path, capsys):
    """Scale review: 3,000 files on a wrong grid printed 3,000 long FAILED lines (919 KB) and left the new,
    empty store behind."""
    src = tmp_path / "npy"
    for vid in load_dataset("thumos14").videos("Test")[:3]:
        _npy(src / f"{vid}.npy", np.zeros((4, 128), np.float32))  # far too few snippets for these videos
    rc = cli(["import-features", "--layout", "generic", "--feature", "vggish", "--src", str(src), "--store",
              str(tmp_path / "s.zarr"), "--dataset", "thumos14", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1 and "failed 3" in out and out.count("FAILED") == 3
    assert "nothing imported" in out and not (tmp_path / "s.zarr").exists()
    from storage.importers import ImportReport

    many = ImportReport(failed={f"v{i:04d}": "made on another grid" for i in range(500)})
    text = many.format()
    assert text.count("FAILED") == ImportReport.SHOWN and "and 480 more failures" in text
