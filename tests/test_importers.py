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


_DATASET_YAML = """name: d
annotations: {ann}
train_subset: test
test_subset: test
tiou_thresholds: [0.5]
grid: {{fps: 25.0, snippet_frames: 16, stride: 16}}
"""


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


def test_an_import_that_imports_nothing_never_removes_the_users_directory(tmp_path, capsys):
    """Adversarial review: an import into an existing (empty but for hidden files) directory where every file
    failed removed the directory, its .git and notes with it."""
    src = tmp_path / "npy"
    _npy(src / "v1.npy", np.full((5, 512), np.nan, np.float32))
    mine = tmp_path / "mine"
    (mine / ".git").mkdir(parents=True)
    (mine / ".git" / "config").write_text("precious")
    (mine / ".notes").write_text("notes")
    rc = cli(["import-features", "--layout", "generic", "--feature", "clip_vitb16", "--src", str(src), "--store",
              str(mine), "--no-progress"])
    assert rc == 1 and "nothing imported" in capsys.readouterr().out
    assert (mine / ".git" / "config").read_text() == "precious" and (mine / ".notes").read_text() == "notes"
    assert sorted(p.name for p in mine.iterdir()) == [".git", ".notes"]  # (the store's parts are gone)


def test_an_import_stopped_by_an_error_after_creating_its_store_leaves_none(tmp_path, capsys):
    """A dataset whose annotation file is missing failed mid-import, after the new store (and its grid) was made."""
    src = tmp_path / "npy"
    _npy(src / "v1.npy", np.zeros((5, 128), np.float32))
    cfg = tmp_path / "d.yaml"
    cfg.write_text(_DATASET_YAML.format(ann=tmp_path / "none.json"))
    rc = cli(["import-features", "--layout", "generic", "--feature", "vggish", "--src", str(src), "--store",
              str(tmp_path / "s.zarr"), "--dataset", str(cfg), "--no-progress"])
    assert rc == 2 and "none.json" in capsys.readouterr().err and not (tmp_path / "s.zarr").exists()


def test_odd_files_fail_alone_and_the_rest_is_imported(tmp_path, capsys):
    """Adversarial review: a directory, a FIFO (np.load waited forever), a broken link, an .npz under an .npy
    name, a 0-d array and a file named zarr.json.npy each aborted the whole import (or hung it)."""
    import os

    src = tmp_path / "npy"
    _npy(src / "a_good.npy", np.zeros((5, 128), np.float32))
    _npy(src / "z_good.npy", np.ones((5, 128), np.float32))
    (src / "dir.npy").mkdir()
    os.mkfifo(src / "fifo.npy")
    (src / "broken.npy").symlink_to(tmp_path / "nowhere.npy")
    np.savez(tmp_path / "arch.npz", a=np.zeros((5, 128), np.float32))
    (tmp_path / "arch.npz").rename(src / "archive.npy")
    np.save(src / "scalar.npy", np.float32(3))
    _npy(src / "zarr.json.npy", np.zeros((5, 128), np.float32))
    rc = cli(["import-features", "--layout", "generic", "--feature", "vggish", "--src", str(src), "--store",
              str(tmp_path / "s.zarr"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1 and "imported 2" in out and "failed 6" in out, out
    for vid, why in [("dir", "not a regular file"), ("fifo", "not a regular file"), ("broken", "not a regular file"),
                     ("archive", ".npz archive"), ("scalar", "single number"), ("zarr.json", "Zarr's metadata")]:
        assert f"FAILED {vid}: " in out and why in out.split(f"FAILED {vid}: ")[1].splitlines()[0], (vid, out)
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert sorted(store.list_videos()) == ["a_good", "z_good"]
    assert cli(["store", "verify", str(tmp_path / "s.zarr")]) == 0


def test_a_report_with_a_non_utf8_file_name_still_prints(tmp_path, capsys, monkeypatch):
    from storage.importers import ImportReport

    text = ImportReport(failed={"bad\udcff": "video 'bad\\udcff': not valid UTF-8"},
                        not_annotated=["x\udcfe"]).format()
    assert "bad\\udcff" in text and "x\\udcfe" in text
    text.encode("utf-8")  # (printable on a strict UTF-8 terminal)


def test_duplicate_and_mixed_split_files_fail_instead_of_merging(tmp_path):
    """BaS-Net: one id in train/ and test/ was merged (the last split silently won, or rgb of one split was paired
    with flow of the other); ActionFormer: v_<id>.npy silently replaced <id>.npy."""
    rng = np.random.default_rng(6)
    data = _basnet_tree(tmp_path / "f", rng)
    vid, other = THUMOS_TEST[0], THUMOS_TRAIN[0]
    rgb, flow = data[vid]
    _npy(tmp_path / "f" / "train" / "rgb" / f"{vid}.npy", rgb)  # (the test video's rgb in train too)
    (tmp_path / "f" / "train" / "flow" / f"{other}.npy").rename(tmp_path / "f" / "test" / "flow" / f"{other}.npy")
    store = FeatureStore.create(tmp_path / "s.zarr")
    rep = import_features(store, "basnet", tmp_path / "f", progress=False)
    assert "found more than once" in rep.failed[vid] and "different splits" in rep.failed[other]
    assert store.list_videos() == [THUMOS_TRAIN[1]]

    ds = load_dataset("activitynet12")
    avid = "_-JNaelSKO8"
    ann = ds.annotations(avid)
    grid = SnippetGrid(float(ann.fps or 30.0), 16, 16)
    t = grid.num_snippets(int(round(ann.duration * grid.fps)))
    _npy(tmp_path / "af" / f"{avid}.npy", np.zeros((t, 2048), np.float32))
    _npy(tmp_path / "af" / f"v_{avid}.npy", np.ones((t, 2048), np.float32))
    store = FeatureStore.create(tmp_path / "a.zarr", grid=grid)
    rep = import_features(store, "actionformer", tmp_path / "af", dataset=ds, progress=False)
    assert store.load(avid, ["i3d_rgb"])["i3d_rgb"].sum() == 0  # <id>.npy is <id>
    assert rep.not_annotated == [f"v_{avid}"]  # (and the other is not hidden)


def test_a_changed_file_re_imported_describes_the_video_anew(tmp_path):
    """A re-import of a changed file kept the first import's VideoInfo: its length and fingerprint were wrong."""
    src = tmp_path / "npy"
    _npy(src / "v.npy", np.zeros((10, 512), np.float32))
    store = FeatureStore.create(tmp_path / "s.zarr")
    import_features(store, "generic", src, feature="clip_vitb16", progress=False)
    _npy(src / "v.npy", np.zeros((500, 512), np.float32))
    rep = import_features(store, "generic", src, feature="clip_vitb16", progress=False)
    assert rep.imported == ["v"] and store.num_snippets("v") == 500
    info = store.video_info("v")
    assert info.num_frames == 499 * 16 + 16 and info.source_fingerprint == store.provenance("v")[
        "clip_vitb16"].params["source_sha256"]
    assert str(src) in store.provenance("v")["clip_vitb16"].params["source_files"][0]


def test_layout_features_are_not_put_on_an_existing_store_of_another_grid(tmp_path, capsys):
    """BaS-Net's files (25 fps, 16/16) imported into a 10 fps store silently got that store's times."""
    _basnet_tree(tmp_path / "f", np.random.default_rng(7))
    FeatureStore.create(tmp_path / "s.zarr", grid=SnippetGrid(10.0, 8, 8))
    base = ["import-features", "--layout", "basnet", "--src", str(tmp_path / "f"), "--store", str(tmp_path / "s.zarr"),
            "--no-progress"]
    assert cli(base) == 2
    assert "is not the basnet features' (25 fps, 16/16)" in capsys.readouterr().err
    assert FeatureStore.open(tmp_path / "s.zarr").list_videos() == []
    assert cli(base + ["--fps", "10", "--snippet-frames", "8", "--stride", "8"]) == 0  # (said explicitly)


def test_non_finite_grid_and_annotation_values_are_refused(tmp_path):
    from storage.datasets import DatasetError

    with pytest.raises(ValueError, match="fps finite"):
        SnippetGrid(float("inf"), 16, 16)
    for bad in ("inf", "nan", 0, -5):
        ann = tmp_path / f"a{bad}.json"
        ann.write_text(json.dumps({"database": {"v": {"subset": "test", "duration": bad, "annotations": []}}}))
        cfg = tmp_path / f"d{bad}.yaml"
        cfg.write_text(_DATASET_YAML.format(ann=ann))
        with pytest.raises(DatasetError, match="duration must be a positive number"):
            load_dataset(str(cfg)).videos()
