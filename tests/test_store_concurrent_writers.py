"""Two writers of one video: a writer plans (what to compute, whether the source changed) before it takes the
video's lock, so another process may write the video in between. Found by a concurrency review: features of
two different files merged under one video id, a replacement dropping what another process had just added,
and an import racing an extraction recording the .npy folder as the video's source."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from extractors.errors import VideoError
from extractors.pipeline import Extractors, extract_video, file_fingerprint
from storage import FeatureProvenance, FeatureStore, StoreConflict, VideoInfo
from storage.importers import import_features
from tests.media import have_ffmpeg, make_video, small_extract_config

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe not on PATH")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("writers")
    (d / "weights").mkdir()
    cfg = small_extract_config(d / "weights", features=("vggish",))  # (the cheapest feature)
    video = make_video(d / "x.mp4", seconds=2.6, size=(80, 60), audio=True)  # 4 snippets
    return d, cfg, Extractors(cfg), video


def _prov(name: str) -> FeatureProvenance:
    return FeatureProvenance(extractor="other-process", extractor_version="1", weights_sha256=None,
                             random_init=True, preprocess_hash="x")


def _info(fingerprint: str, source: str = "/elsewhere/y.mp4") -> VideoInfo:
    return VideoInfo(source=source, source_fingerprint=fingerprint, fps=25.0, num_frames=65, duration=2.6,
                     has_audio=False)


def _another_process_writes_first(monkeypatch, store: FeatureStore, write) -> None:
    """Run ``write(other)`` (another FeatureStore on the same path: another process) just before this
    process's first write_video takes the lock, i.e. after its plan."""
    real, done = FeatureStore.write_video, []

    def racing(self, *a, **kw):
        if not done:
            done.append(True)
            write(FeatureStore.open(store.path))
        return real(self, *a, **kw)

    monkeypatch.setattr(FeatureStore, "write_video", racing)


def test_features_of_two_files_are_never_merged_under_one_id(env, tmp_path, monkeypatch):
    d, cfg, models, video = env
    store = FeatureStore.create(tmp_path / "s")
    extract_video(video, "a", store, cfg, models)
    # This run plans on the stored version (same source: compute i3d_rgb, keep vggish); meanwhile another
    # process stores "a" from ANOTHER file (replace_all). Merging would publish vggish of file Y beside
    # i3d_rgb of file X under X's name, and nothing would ever notice.
    y = {"vggish": np.ones((4, 128), np.float32), "audio_mask": np.zeros(4, bool)}
    _another_process_writes_first(monkeypatch, store, lambda other: other.write_video(
        "a", y, _info("other-file"), {"vggish": _prov("vggish")}, replace_all=True))
    cfg2 = replace(cfg, features=("vggish", "i3d_rgb"))
    with pytest.raises(VideoError, match="another file") as e:
        extract_video(video, "a", store, cfg2, Extractors(cfg2))
    assert e.value.stage == "store" and "nothing written" in str(e.value)
    assert store.video_info("a").source_fingerprint == "other-file" and store.features_of("a") - {"audio_mask"} == {"vggish"}
    assert np.array_equal(store.load("a")["vggish"], y["vggish"])


def test_a_write_keeps_what_another_process_added_meanwhile(env, tmp_path, monkeypatch):
    d, cfg, models, video = env
    store = FeatureStore.create(tmp_path / "s")
    fp = file_fingerprint(video)
    # planned on an absent video; another process (another --features subset) creates it from the same file
    rgb = np.full((4, 1024), 0.5, np.float32)
    _another_process_writes_first(monkeypatch, store, lambda other: other.write_video(
        "a", {"i3d_rgb": rgb}, _info(fp, str(video)), {"i3d_rgb": _prov("i3d_rgb")}))
    r = extract_video(video, "a", store, cfg, models)
    assert r.computed == ["vggish"] and store.features_of("a") - {"audio_mask"} == {"i3d_rgb", "vggish"}
    assert np.array_equal(store.load("a")["i3d_rgb"], rgb)


def test_a_replacement_keeps_what_another_process_added_from_the_new_file(env, tmp_path, monkeypatch):
    """Both processes saw the source change and planned to replace everything: the second used to drop the
    first's feature."""
    d, cfg, models, video = env
    store = FeatureStore.create(tmp_path / "s")
    store.write_video("a", {"i3d_rgb": np.zeros((4, 1024), np.float32)}, _info("old-bytes", str(video)),
                      {"i3d_rgb": _prov("i3d_rgb")})
    rgb = np.full((4, 1024), 0.5, np.float32)
    _another_process_writes_first(monkeypatch, store, lambda other: other.write_video(
        "a", {"i3d_rgb": rgb}, _info(file_fingerprint(video), str(video)), {"i3d_rgb": _prov("i3d_rgb")},
        replace_all=True))
    r = extract_video(video, "a", store, cfg, models)
    assert r.computed == ["vggish"] and r.replaced_source is None
    assert store.features_of("a") - {"audio_mask"} == {"i3d_rgb", "vggish"} and np.array_equal(store.load("a")["i3d_rgb"], rgb)


def test_expect_version_refuses_a_stale_plan(tmp_path):
    store = FeatureStore.create(tmp_path / "s")
    feats = {"i3d_rgb": np.zeros((3, 1024), np.float32)}
    prov = {"i3d_rgb": _prov("i3d_rgb")}
    assert store.video_version("a") is None
    store.write_video("a", feats, _info("f"), prov, expect_version=None)
    v1 = store.video_version("a")
    with pytest.raises(StoreConflict, match="written by another process"):
        store.write_video("a", feats, _info("f"), prov, expect_version=None)
    store.write_video("a", feats, None, prov, expect_version=v1)
    assert store.video_version("a") not in (None, v1)
    with pytest.raises(StoreConflict):
        store.write_video("a", feats, None, prov, expect_version=v1)
    store.delete_video("a")
    with pytest.raises(StoreConflict, match="deleted"):
        store.write_video("a", feats, _info("f"), prov, expect_version=v1)


def test_extracting_a_video_adds_to_its_imported_features(env, tmp_path):
    """Community I3D features imported, then CLIP/VGGish extracted from the videos (a common mix): the
    extraction took the import's .npy folder for a changed source and dropped the imported features."""
    d, cfg, models, video = env
    src = tmp_path / "npy"
    src.mkdir()
    rgb = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    np.save(src / "a.npy", rgb)
    store = FeatureStore.create(tmp_path / "s")
    assert import_features(store, "generic", src, "i3d_rgb", progress=False).imported == ["a"]
    r = extract_video(video, "a", store, cfg, models)
    assert r.computed == ["vggish"] and r.replaced_source is None
    assert store.features_of("a") - {"audio_mask"} == {"i3d_rgb", "vggish"} and np.array_equal(store.load("a")["i3d_rgb"], rgb)
    assert store.video_info("a").source == str(video.resolve())  # now a video's, so the next run is incremental
    assert extract_video(video, "a", store, cfg, models).skipped


def test_an_import_never_replaces_a_stored_videos_info(env, tmp_path):
    """The importer decided 'new video: pass info' before the lock; an extraction publishing the video in
    between then had its source replaced by the .npy folder (and was re-extracted whole next time)."""
    d, cfg, models, video = env
    store = FeatureStore.create(tmp_path / "s")
    extract_video(video, "a", store, cfg, models)
    store.write_video("a", {"i3d_rgb": np.zeros((4, 1024), np.float32)}, _info("npy-sha", "/npy/a"),
                      {"i3d_rgb": _prov("i3d_rgb")}, keep_info=True)
    assert store.video_info("a").source == str(video.resolve())
    assert extract_video(video, "a", store, cfg, models).skipped


def test_imported_features_of_another_length_are_replaced_not_a_failure(env, tmp_path):
    """Importers accept features within 2 snippets of the video's length; kept beside this run's they would
    disagree on T, and the video failed on every run (and reextract remembered it as broken)."""
    d, cfg, models, video = env
    src = tmp_path / "npy"
    src.mkdir()
    np.save(src / "a.npy", np.zeros((5, 1024), np.float32))  # the video has 4 snippets
    store = FeatureStore.create(tmp_path / "s")
    assert import_features(store, "generic", src, "i3d_rgb", progress=False).imported == ["a"]
    r = extract_video(video, "a", store, cfg, models)
    assert r.computed == ["vggish"] and r.replaced_source == str(src / "a")
    assert store.features_of("a") - {"audio_mask"} == {"vggish"} and store.num_snippets("a") == 4
