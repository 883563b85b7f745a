"""Extraction pipeline end to end (random-init networks at test scale), manifests and `clipae extract`."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from extractors.config import ALL_FEATURES, EXTRACTOR_VERSIONS, config_from_dict, preprocess_hash
from extractors.decode import open_frames
from extractors.errors import VideoError
from extractors.manifest import ManifestError, discover_videos
from extractors.pipeline import Extractors, extract_many, extract_video
from extractors.preprocess import FramePreprocessor, PreprocessSpec, iter_preprocessed
from extractors.probe import probe_video
from storage import FeatureStore, SnippetGrid
from tests.media import have_ffmpeg, make_corrupt, make_video, small_extract_config

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe not on PATH")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("extract")
    wdir = d / "weights"  # empty: every network is random-init (opt-in in the config)
    wdir.mkdir()
    cfg = small_extract_config(wdir)
    models = Extractors(cfg)
    video = make_video(d / "clip_a.mp4", seconds=2.6, size=(80, 60), audio=True)  # 65 frames -> 4 snippets
    store = FeatureStore.create(d / "store")
    report = extract_video(video, "a", store, cfg, models)
    return SimpleNamespace(d=d, wdir=wdir, cfg=cfg, models=models, video=video, store=store, report=report)


def test_extraction_writes_every_feature_with_provenance(env):
    r = env.report
    assert r.computed == list(ALL_FEATURES) and r.reused == []
    assert (r.num_frames, r.num_snippets, r.decode_backend, r.has_audio) == (65, 4, "decord", True)
    f = env.store.load("a")
    dims = {"i3d_rgb": 1024, "i3d_flow": 1024, "clip_vitb16": 512, "vggish": 128}
    for name, d in dims.items():
        assert f[name].shape == (4, d) and f[name].dtype == np.float32 and np.isfinite(f[name]).all()
        assert not np.allclose(f[name][0], f[name][1]), f"{name}: snippets should differ (moving pattern, tone)"
    assert f["audio_mask"].tolist() == [True] * 4
    assert np.allclose(np.linalg.norm(f["clip_vitb16"], axis=1), 1, atol=1e-5)
    info = env.store.video_info("a")
    assert (info.num_frames, info.fps, info.has_audio, info.width, info.height) == (65, 25.0, True, 80, 60)
    assert info.duration == pytest.approx(2.6, abs=0.05)
    for name, p in env.store.provenance("a").items():
        assert p.random_init and p.weights_sha256 is None
        assert p.preprocess_hash == preprocess_hash(env.cfg, name, random_init=True)
        assert p.extractor_version == EXTRACTOR_VERSIONS[name]
        assert p.params["preprocess"]["fps"] == 25.0 and p.params["precision"] == "fp32"
    assert env.store.provenance("a")["i3d_rgb"].params["preprocess"]["crop"] == 32
    assert env.store.provenance("a")["i3d_flow"].params["tvl1_backend"] == "torch"  # "auto" resolved on the CPU


def test_report_says_where_the_time_went(env):
    st = env.report.stage_seconds
    stages = {"audio_decode", "decode_wait", "tvl1", "compute_wait", "i3d_rgb", "i3d_flow", "clip_vitb16", "vggish", "store"}
    assert stages <= set(st), st  # (TV-L1 eager on the CPU runs on the calling thread: its own stage)
    assert all(v >= 0 for v in st.values()) and sum(st.values()) <= env.report.seconds + 0.05, (st, env.report.seconds)
    assert st["tvl1"] > 0 and st["i3d_rgb"] > 0


def test_a_failed_video_does_not_keep_its_tensors_alive(env, tmp_path, monkeypatch):
    """Failures are kept (ExtractFailure, Prefect task states): their tracebacks must not pin GPU tensors."""
    import gc
    import weakref

    import extractors.pipeline as P

    refs = []

    def boom(win, grid, models, bs):
        t = torch.ones(1000)  # stands for a window's batch on the GPU
        refs.append(weakref.ref(t))
        raise RuntimeError("boom in the networks")

    monkeypatch.setattr(P, "_i3d_rgb", boom)
    res = extract_many([("a", env.video)], FeatureStore.create(tmp_path / "s"), env.cfg, env.models)
    assert not res[0].ok and "boom in the networks" in str(res[0].error)
    gc.collect()
    assert refs and refs[0]() is None


def test_networks_run_on_one_thread_whatever_thread_asks(env):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    models = Extractors(env.cfg)
    with ThreadPoolExecutor(4) as pool:  # (cuDNN keeps execution plans per thread: one thread builds them once)
        idents = set(pool.map(lambda _: models.compute(threading.get_ident), range(8)))
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert models.compute(lambda: models.compute(lambda: 7)) == 7  # re-entrant from a network job
    models.close()


def test_rerun_skips_complete_video(env):
    r = extract_video(env.video, "a", env.store, env.cfg, env.models)
    assert r.skipped and r.reused == list(ALL_FEATURES)


def test_changed_extractor_config_recomputes_only_that_feature(env, tmp_path):
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    before = store.load("a")
    cfg = replace(env.cfg, clip=replace(env.cfg.clip, frames_per_snippet=4))
    r = extract_video(env.video, "a", store, cfg, Extractors(cfg))
    assert r.computed == ["clip_vitb16"] and r.reused == ["i3d_rgb", "i3d_flow", "vggish"]
    after = store.load("a")
    for name in ("i3d_rgb", "i3d_flow", "vggish", "audio_mask"):
        assert np.array_equal(before[name], after[name])
    assert not np.allclose(before["clip_vitb16"], after["clip_vitb16"])
    assert store.provenance("a")["clip_vitb16"].params["preprocess"]["positions"] == [2, 6, 10, 14]


def test_float16_tvl1_state_recomputes_only_the_flow_feature(env, tmp_path):
    """TVL1Config(state_dtype="float16") changes the flow values, so it is a new i3d_flow feature (new hash,
    recorded in provenance), computed alongside the untouched others, and close to the float32 one."""
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    before = store.load("a")
    cfg = replace(env.cfg, tvl1=replace(env.cfg.tvl1, state_dtype="float16"))
    r = extract_video(env.video, "a", store, cfg, Extractors(cfg))
    assert r.computed == ["i3d_flow"] and sorted(r.reused) == ["clip_vitb16", "i3d_rgb", "vggish"]
    assert store.provenance("a")["i3d_flow"].params["preprocess"]["tvl1"]["state_dtype"] == "float16"
    after = store.load("a")["i3d_flow"]
    assert np.isfinite(after).all() and after.shape == before["i3d_flow"].shape
    cos = (after * before["i3d_flow"]).sum(1) / (np.linalg.norm(after, axis=1) * np.linalg.norm(before["i3d_flow"], axis=1))
    assert cos.min() > 0.99, cos


def assert_same_features(got, want, rtol=1e-3):
    """Equal up to ``rtol`` of the reference's scale: random-init I3D features are ~1e-6 (flow ~1e-8), so an
    absolute tolerance such as 1e-4 passed for any input at all."""
    got, want = np.asarray(got), np.asarray(want)
    scale = float(np.abs(want).max())
    assert scale > 0, "reference features are all zero"
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max difference {err:.3g} vs scale {scale:.3g}"


def test_features_match_direct_computation(env):
    """Snippet 1 recomputed by hand from decoded frames equals what the pipeline stored."""
    from extractors.i3d import rgb_to_i3d_input
    from extractors.tvl1 import flow_to_i3d_input, tvl1_flow

    cfg = env.cfg
    probe = probe_video(env.video)
    spec = PreprocessSpec(resize_short=36, crop_size=32, want_clip=False)
    out = list(iter_preprocessed(open_frames(env.video, probe, 25.0), FramePreprocessor(spec, lambda k: False), 100))
    rgb, gray = out[0]["rgb"], torch.from_numpy(out[0]["gray"])
    stored = env.store.load("a")
    rgb_feat = env.models.model("i3d_rgb").features(rgb_to_i3d_input(rgb[16:32]))
    assert_same_features(rgb_feat[0].numpy(), stored["i3d_rgb"][1])
    with pytest.raises(AssertionError):  # (the check tells neighbouring snippets apart)
        assert_same_features(rgb_feat[0].numpy(), stored["i3d_rgb"][2])

    def flow_feature(f0, f1):
        flow = flow_to_i3d_input(tvl1_flow(f0, f1, cfg.tvl1))  # (16, 2, c, c)
        return env.models.model("i3d_flow").features(flow.permute(1, 0, 2, 3)[None])[0].numpy()

    assert_same_features(flow_feature(gray[16:32], gray[17:33]), stored["i3d_flow"][1])
    with pytest.raises(AssertionError):  # flow from frame t to t+1, not back
        assert_same_features(flow_feature(gray[17:33], gray[16:32]), stored["i3d_flow"][1])


def test_window_size_and_decoder_do_not_change_features(env, tmp_path):
    visual = ("i3d_rgb", "i3d_flow", "clip_vitb16")
    ref = env.store.load("a")
    cfg1 = replace(env.cfg, features=visual, window_snippets=1, queue_windows=1)
    s1 = FeatureStore.create(tmp_path / "w1")
    extract_video(env.video, "a", s1, cfg1, Extractors(cfg1))
    got = s1.load("a")
    for name in visual:  # windows of 1 snippet: the flow of each window's last frame uses the overlap frame
        assert_same_features(got[name], ref[name], rtol=1e-4)
    cfg2 = replace(env.cfg, features=("i3d_rgb",), decode_backend="ffmpeg")
    s2 = FeatureStore.create(tmp_path / "ff")
    r = extract_video(env.video, "a", s2, cfg2, Extractors(cfg2))
    assert r.decode_backend == "ffmpeg"
    cos = (s2.load("a")["i3d_rgb"] * ref["i3d_rgb"]).sum(1) / (
        np.linalg.norm(ref["i3d_rgb"], axis=1) * np.linalg.norm(s2.load("a")["i3d_rgb"], axis=1))
    assert cos.min() > 0.999


def test_video_without_audio_gets_zero_audio_features(env, tmp_path):
    v = make_video(tmp_path / "silent.mp4", seconds=1.4, audio=False)
    cfg = replace(env.cfg, features=("vggish",))
    store = FeatureStore.create(tmp_path / "s")
    r = extract_video(v, "silent", store, cfg, Extractors(cfg))
    assert r.computed == ["vggish"] and r.num_snippets == 2
    f = store.load("silent")
    assert not f["audio_mask"].any() and np.all(f["vggish"] == 0)
    assert store.video_info("silent").has_audio is False


def test_progress_knows_the_total_before_the_first_window(env, tmp_path):
    calls = []
    cfg = replace(env.cfg, features=("i3d_rgb",))
    extract_video(env.video, "a", FeatureStore.create(tmp_path / "s"), cfg, env.models,
                  progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4), calls


def test_per_video_progress_with_several_workers(env, tmp_path, capsys):
    """``video_progress``: each video in flight reports its own snippets, whatever the number of workers
    (``progress`` is for one video at a time); the CLI draws one bar per video in flight."""
    import threading

    from clipae.cli import main

    b = make_video(tmp_path / "b.mp4", seconds=1.4, size=(80, 60))  # 35 frames -> 2 snippets
    calls: dict[str, list] = {}
    threads: dict[str, set] = {}

    def video_progress(vid):
        def step(done, total):
            calls.setdefault(vid, []).append((done, total))
            threads.setdefault(vid, set()).add(threading.current_thread().name)
        return step

    cfg = replace(env.cfg, features=("i3d_rgb",), video_workers=2, window_snippets=1)
    res = extract_many([("a", env.video), ("b", b)], FeatureStore.create(tmp_path / "s"), cfg, env.models,
                       video_progress=video_progress)
    assert all(r.ok for r in res)
    assert calls["a"][0] == (0, 4) and calls["a"][-1] == (4, 4) and len(calls["a"]) == 5  # one per window
    assert calls["b"][0] == (0, 2) and calls["b"][-1] == (2, 2)
    assert all(name.startswith("extract") for t in threads.values() for name in t)  # the videos' own threads

    vids = tmp_path / "videos"
    vids.mkdir()
    for name in ("a", "b"):
        (vids / f"{name}.mp4").write_bytes((env.video if name == "a" else b).read_bytes())
    conf = tmp_path / "small.json"
    conf.write_text(json.dumps({"resize_short": 36, "crop_size": 32, "window_snippets": 1}))
    assert main(["extract", "--videos", str(vids), "--store", str(tmp_path / "cli"), "--features", "i3d_rgb",
                 "--weights-dir", str(env.wdir), "--device", "cpu", "--config", str(conf), "--allow-random-weights",
                 "--video-workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "videos: 100%" in err and "a: " in err and "b: " in err and "snippet" in err, err


@pytest.mark.parametrize(("offset", "mask"), [
    (1.5, [False, False, True, True]),
    (1.2, [False, False, True, True]),  # snippet 1's window holds 25% audio: not audio (> 50% is)
    (0.9, [False, True, True, False]),  # 56% audio in snippet 1's window; 25% in the last (the track ends at 2.0 s)
])
def test_audio_starting_late_is_masked_until_it_starts(env, tmp_path, offset, mask):
    """The silence decode_audio puts before a late audio stream is not audio; a snippet counts as audio when
    more than half of its 0.96 s window holds the track."""
    import subprocess

    v = make_video(tmp_path / "v.mkv", seconds=2.6, audio=False)
    late = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(v), "-itsoffset", str(offset), "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=16000:duration=1.1", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", "pcm_s16le", str(late)], check=True)
    cfg = replace(env.cfg, features=("vggish",))
    store = FeatureStore.create(tmp_path / "s")
    extract_video(late, "late", store, cfg, Extractors(cfg))
    assert store.load("late")["audio_mask"].tolist() == mask  # centres 0.32 0.96 1.60 2.24 s


def test_changed_source_replaces_all_features(env, tmp_path):
    cfg = replace(env.cfg, features=("vggish",))
    models = Extractors(cfg)
    store = FeatureStore.create(tmp_path / "s")
    v = make_video(tmp_path / "v.mp4", seconds=1.4)
    extract_video(v, "v", store, cfg, models)
    assert store.load("v")["vggish"].shape[0] == 2
    make_video(v, seconds=2.2)  # same path, new content and length
    r = extract_video(v, "v", store, cfg, models)
    assert r.computed == ["vggish"] and store.load("v")["vggish"].shape[0] == 3


def test_extract_many_reports_and_continues(env, tmp_path):
    cfg = replace(env.cfg, features=("vggish",))
    store = FeatureStore.create(tmp_path / "s")
    good = make_video(tmp_path / "good.mp4", seconds=0.8)
    bad = make_corrupt(tmp_path / "bad.mp4")
    res = extract_many([("bad", bad), ("good", good)], store, cfg, Extractors(cfg))
    assert [r.ok for r in res] == [False, True]
    assert res[0].stage == "probe" and "bad.mp4" in str(res[0].error)
    assert store.list_videos() == ["good"]


def test_a_full_disk_or_no_memory_is_the_machines_failure_not_the_videos(env, tmp_path, monkeypatch):
    """A read-only or full store, or no memory, was filed as the video's own failure (a VideoError): reextract then
    remembered the videos as broken and never extracted them again, and the run ended Completed."""
    import errno

    import extractors.pipeline as P
    from extractors.errors import ResourceError

    cfg = replace(env.cfg, features=("vggish",))
    store = FeatureStore.create(tmp_path / "s")
    for exc in (OSError(errno.EROFS, "Read-only file system"), OSError(errno.EACCES, "Permission denied")):
        def refuse(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(store, "write_video", refuse)
        with pytest.raises(ResourceError, match=r"clip_a.mp4: store: (OSError|PermissionError): .*not of the video") as info:
            extract_video(env.video, "v", store, cfg, env.models)
        assert not isinstance(info.value, VideoError)
    monkeypatch.undo()

    def race(*a, **k):  # (a file gone under the writer: not the machine's doing)
        raise OSError(errno.ENOENT, "No such file or directory")
    monkeypatch.setattr(store, "write_video", race)
    with pytest.raises(VideoError, match="store: FileNotFoundError"):
        extract_video(env.video, "v", store, cfg, env.models)
    monkeypatch.undo()

    for exc, name in ((torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OutOfMemoryError"),
                      (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "RuntimeError")):
        def no_gpu_memory(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(P, "decode_audio", no_gpu_memory)
        with pytest.raises(ResourceError, match=f"audio: {name}"):
            extract_video(env.video, "v", store, cfg, env.models)
    with pytest.raises(ResourceError):  # (extract_many stops the run: the next video would meet the same)
        extract_many([("v", env.video), ("w", env.video)], store, cfg, env.models)

    def huge(*a, **k):  # (one absurd allocation: a file's damaged header, not a machine out of memory)
        raise MemoryError()
    monkeypatch.setattr(P, "decode_audio", huge)
    with pytest.raises(VideoError, match="audio: MemoryError"):
        extract_video(env.video, "v", store, cfg, env.models)

    def unreadable(*a, **k):  # (EACCES is the machine's only when writing the store: here the file's own)
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(P, "decode_audio", unreadable)
    with pytest.raises(VideoError, match="audio: PermissionError") as info:
        extract_video(env.video, "v", store, cfg, env.models)
    assert not isinstance(info.value, ResourceError)
    monkeypatch.undo()
    # the video's own problems stay VideoErrors: a missing file, a decoder failure
    with pytest.raises(VideoError, match="probe"):
        extract_video(tmp_path / "gone.mp4", "v", store, cfg, env.models)
    assert store.list_videos() == []


def test_extract_many_with_several_decoders_keeps_order_and_features(env, tmp_path, monkeypatch):
    """video_workers > 1: same features as one at a time, results in input order, a bad video fails alone.

    TV-L1 (eager on the CPU) runs outside the compute lock here, for several windows at once.
    """
    cfg = replace(env.cfg, video_workers=3)
    assert env.models.concurrent_flow
    # torch.compile'd TV-L1 must not be entered from several threads: it stays under the lock.
    assert not Extractors(replace(cfg, tvl1=replace(cfg.tvl1, compile=True))).concurrent_flow
    from extractors.errors import ConfigError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="backend='triton' runs on a CUDA device"):  # before any video
        Extractors(replace(cfg, tvl1=replace(cfg.tvl1, backend="triton")))
    store = FeatureStore.create(tmp_path / "s")
    other = make_video(tmp_path / "b.mp4", seconds=1.4, size=(72, 56), source="testsrc2")
    bad = make_corrupt(tmp_path / "bad.mp4")
    started, finished = [], []
    res = extract_many([("a", env.video), ("bad", bad), ("b", other)], store, cfg, env.models,
                       on_video_start=lambda v, p: started.append(v), on_video_done=lambda r: finished.append(r.video_id))
    assert [r.video_id for r in res] == ["a", "bad", "b"] and [r.ok for r in res] == [True, False, True]
    assert sorted(started) == sorted(finished) == ["a", "b", "bad"]
    ref = env.store.load("a")
    got = store.load("a")
    for name in ALL_FEATURES:
        assert np.allclose(got[name], ref[name], atol=1e-5), name
    assert store.list_videos() == ["a", "b"]
    solo = FeatureStore.create(tmp_path / "solo")
    extract_video(other, "b", solo, env.cfg, env.models)
    for name in ALL_FEATURES:
        assert np.allclose(store.load("b")[name], solo.load("b")[name], atol=1e-5), name


# ----------------------------------------------------------------------------- manifests
def test_manifest_formats(tmp_path):
    for name in ("a.mp4", "b.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert discover_videos(tmp_path) == [("a", tmp_path / "a.mp4"), ("b", tmp_path / "b.mkv")]
    (tmp_path / "m.csv").write_text("video_id,path\n# comment\nvid_1,a.mp4\n\nb.mkv\n/abs/c.mp4\n")
    assert discover_videos(tmp_path / "m.csv") == [
        ("vid_1", tmp_path / "a.mp4"), ("b", tmp_path / "b.mkv"), ("c", Path("/abs/c.mp4"))]
    (tmp_path / "m.json").write_text(json.dumps([{"video_id": "x", "path": "a.mp4"}, ["y", "b.mkv"]]))
    assert discover_videos(tmp_path / "m.json") == [("x", tmp_path / "a.mp4"), ("y", tmp_path / "b.mkv")]
    assert discover_videos(str(tmp_path / "*.mp4")) == [("a", tmp_path / "a.mp4")]
    (tmp_path / "d.json").write_text(json.dumps({"p": "a.mp4"}))
    assert discover_videos(tmp_path / "d.json") == [("p", tmp_path / "a.mp4")]
    # one video file (by extension; its content is the decoder's business)
    assert discover_videos(tmp_path / "b.mkv") == [("b", tmp_path / "b.mkv")]


def test_manifest_path_cells_keep_spaces_that_belong_to_the_file_name(tmp_path):
    (tmp_path / " a b .mp4").write_bytes(b"")
    (tmp_path / "c.mp4").write_bytes(b"")
    (tmp_path / "m.csv").write_text("ab, a b .mp4\nc,  c.mp4 \n")
    assert discover_videos(tmp_path / "m.csv") == [("ab", tmp_path / " a b .mp4"), ("c", tmp_path / "c.mp4")]


def test_manifest_errors_list_every_bad_entry(tmp_path):
    (tmp_path / "m.txt").write_text("a,x.mp4\na,y.mp4\n../evil,z.mp4\nq,r,s\n")
    with pytest.raises(ManifestError, match=r"(?s)3 bad entries.*m.txt:2: duplicate.*m.txt:3.*m.txt:4: expected"):
        discover_videos(tmp_path / "m.txt")
    (tmp_path / "m2.txt").write_text("a,x.mp4\na,y.mp4\n.hidden,z.mp4\n")
    with pytest.raises(ManifestError) as e:
        discover_videos(tmp_path / "m2.txt")
    assert "duplicate video id 'a'" in str(e.value) and "m2.txt:3" in str(e.value)
    # ids one directory apart on macOS/Windows file systems: equal up to Unicode normalisation or case
    (tmp_path / "m3.txt").write_text("caf\u00e9,x.mp4\ncafe\u0301,y.mp4\nClip,z.mp4\nclip,w.mp4\n")
    with pytest.raises(ManifestError, match=r"(?s)2 bad entries.*m3.txt:2: duplicate video id 'cafe\u0301' \(same as "
                                            r"'caf\u00e9' up to case.*m3.txt:4: duplicate video id 'clip'"):
        discover_videos(tmp_path / "m3.txt")
    with pytest.raises(ManifestError, match="no such"):
        discover_videos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no videos"):
        discover_videos(tmp_path / "empty")
    (tmp_path / "clip.bin").write_bytes(b"\x00\x00\x00\x18ftypmp42\xb1\xff")  # a video under an unknown extension
    with pytest.raises(ManifestError, match=r"clip.bin: not a text manifest \(not UTF-8 at byte 12\)"):
        discover_videos(tmp_path / "clip.bin")
    # a manifest none of whose entries exists (or a text file that is no manifest) is the wrong file, not
    # N per-video failures; one missing entry among existing ones still fails alone (at extraction)
    (tmp_path / "gone.csv").write_text("v1,/nonexistent/v1.mp4\nv2,nope.mp4\n")
    with pytest.raises(ManifestError, match=r"gone.csv: none of its 2 entries is an existing file \(first, gone.csv:1"):
        discover_videos(tmp_path / "gone.csv")
    (tmp_path / "notes.md").write_text("hello\n")
    with pytest.raises(ManifestError, match=r"its one entry is not an existing file.*Is notes.md a manifest"):
        discover_videos(tmp_path / "notes.md")
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "some.csv").write_text("x.mp4\nmissing.mp4\n")
    assert [v for v, _ in discover_videos(tmp_path / "some.csv")] == ["x", "missing"]


def test_config_from_dict_validates():
    cfg = config_from_dict({"features": "vggish,i3d_rgb", "tvl1": {"warps": 2}, "clip": {"frames_per_snippet": 8}})
    assert cfg.features == ("i3d_rgb", "vggish") and cfg.tvl1.warps == 2 and cfg.clip.frames_per_snippet == 8
    from extractors.errors import ConfigError

    for bad in ({"crop": 3}, {"features": "sift"}, {"precision": "int8"}, {"tvl1": {"tau": -1}}):
        with pytest.raises(ConfigError):
            config_from_dict(bad)
    with pytest.raises(ConfigError, match="video_workers must be >= 1"):
        config_from_dict({"video_workers": 0})
    with pytest.raises(ConfigError, match=r"unknown tvl1 settings \['iters'\]; known: \[.*'inner_iterations'"):
        config_from_dict({"tvl1": {"iters": 3}})
    with pytest.raises(ConfigError, match="backend must be one of auto, torch, triton, triton-grid"):
        config_from_dict({"tvl1": {"backend": "cuda"}})


def test_config_values_of_the_wrong_type_are_refused_by_name(tmp_path):
    """Adversarial review: `allow_random_weights: "no"` (a string, hence true) allowed random weights, and
    `vggish_final_relu: "no"` applied the ReLU; `tvl1: 5`, `video_workers: 2.7`, `weights_dir: 5` were
    tracebacks; `batch_size: 2.5`, `window_snippets: 1.5`, `random_seed: "x"`, `audio_sample_rate: 0` failed
    every video one by one; `autocast_min_cosine: 5` and `flow_bound: -1` were accepted."""
    from extractors.config import load_config_file
    from extractors.errors import ConfigError

    for bad, message in [({"allow_random_weights": "no"}, "allow_random_weights: must be true or false"),
                         ({"vggish_final_relu": "no"}, "vggish_final_relu: must be true or false"),
                         ({"tvl1": 5}, "tvl1: must be a mapping of TVL1Config settings"),
                         ({"clip": None}, "clip: must be a mapping of ClipConfig settings"),
                         ({"video_workers": 2.7}, "video_workers: must be an integer"),
                         ({"weights_dir": 5}, "weights_dir: must be a string or unset"),
                         ({"batch_size": "8"}, "batch_size: must be an integer"),
                         ({"batch_size": True}, "batch_size: must be an integer"),
                         ({"random_seed": "x"}, "random_seed: must be an integer"),
                         ({"fps": "25"}, "fps: must be a finite number"),
                         ({"clip": {"frames_per_snippet": "4"}}, "clip.frames_per_snippet: must be an integer"),
                         ({"tvl1": {"nscales": "5"}}, "tvl1.nscales: must be an integer"),
                         ({"features": 5}, "features: must be a list"),
                         ({"audio_sample_rate": 0}, "audio_sample_rate must be >= 1"),
                         ({"torch_threads": -2}, "torch_threads must be >= 1"),
                         ({"autocast_min_cosine": 5}, "autocast_min_cosine must be in (0, 1]"),
                         ({"flow_bound": -1}, "flow_bound > 0")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_from_dict(bad)
    assert config_from_dict({"fps": 25, "features": ["vggish"]}).fps == 25  # (an integer is a number)
    (tmp_path / "tabs.json").write_text('{\n\t"batch_size": 4\n}\n')  # (valid JSON, not valid YAML)
    assert load_config_file(tmp_path / "tabs.json").batch_size == 4
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfbatch_size: 3\n")
    assert load_config_file(tmp_path / "bom.yaml").batch_size == 3


def test_manifest_headers_after_comments_byte_order_marks_and_odd_json_entries(tmp_path):
    """Adversarial review: the CSV header was recognised on line 1 only (a comment or an Excel byte-order mark
    before it made it a video); a BOM became part of the first id; JSON null/5/true ids were stored as "None",
    "5", "True"; an empty path cell failed as a video instead of an entry."""
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("# generated\n\nvideo_id,path\nA,a.mp4\n")
    assert discover_videos(tmp_path / "m.csv") == [("A", tmp_path / "a.mp4")]
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfvideo_id,path\nA,a.mp4\n")
    assert discover_videos(tmp_path / "bom.csv") == [("A", tmp_path / "a.mp4")]
    (tmp_path / "bom2.csv").write_bytes(b"\xef\xbb\xbfA,a.mp4\n")
    assert discover_videos(tmp_path / "bom2.csv") == [("A", tmp_path / "a.mp4")]
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([["A", "a.mp4"]]).encode())
    assert discover_videos(tmp_path / "bom.json") == [("A", tmp_path / "a.mp4")]
    (tmp_path / "odd.json").write_text(json.dumps([{"video_id": None, "path": "a.mp4"}, [5, "a.mp4"],
                                                   {"video_id": "x", "path": ""}, ["ok", "a.mp4"]]))
    with pytest.raises(ManifestError, match=r"(?s)3 bad entries.*odd.json\[0\]: video_id and path must be strings"):
        discover_videos(tmp_path / "odd.json")
    (tmp_path / "empty_cell.csv").write_text("x,\nok,a.mp4\n")
    with pytest.raises(ManifestError, match=r"empty_cell.csv:1: empty path"):
        discover_videos(tmp_path / "empty_cell.csv")
    from storage import StoreError
    from storage.schema import validate_video_id

    with pytest.raises(StoreError, match="byte-order mark"):
        validate_video_id("\ufeffA")
    assert validate_video_id("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")  # (a zero-width non-joiner
    # in an ordinary Persian word is part of the name)


def test_device_setting_takes_cuda_index_and_checks_it(monkeypatch):
    import torch

    from extractors.errors import ConfigError

    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert config_from_dict({"device": ok}).device == ok
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "CPU"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            config_from_dict({"device": bad})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert config_from_dict({"device": "cuda:1"}).resolved_device() == "cuda:1"
    with pytest.raises(ConfigError, match="'cuda:2' requested but only 2 CUDA device"):
        config_from_dict({"device": "cuda:2"}).resolved_device()


def test_speed_only_tvl1_settings_leave_the_preprocess_hash_alone():
    from extractors.config import ExtractConfig, preprocess_params

    base = ExtractConfig()
    hashes = {preprocess_hash(replace(base, tvl1=replace(base.tvl1, compile=c, check_every=k)), "i3d_flow")
              for c in (None, True, False) for k in (None, 1, 10)}
    assert len(hashes) == 1
    # blanked to the default rather than dropped: hashes of existing stores stay valid
    assert preprocess_params(base, "i3d_flow")["tvl1"]["compile"] is None
    assert preprocess_hash(replace(base, tvl1=replace(base.tvl1, warps=4)), "i3d_flow") not in hashes


# ----------------------------------------------------------------------------- CLI
def test_cli_summary_reports_wall_clock_throughput(capsys):
    """Videos extracted in parallel overlap: frames/s is over the run's wall time, not summed video times."""
    from clipae.commands.extract import _print_summary

    done = [SimpleNamespace(ok=True, skipped=False, num_snippets=25, num_frames=400, seconds=10.0,
                            computed=["vggish"], reused=[], video_id=v, replaced_source=None) for v in ("a", "b")]
    assert _print_summary(done, SimpleNamespace(path="/s", feature_configs=dict), wall_seconds=10.0) == 0
    out = capsys.readouterr().out
    assert "2 extracted (50 snippets, 80.0 frames/s over 10.0 s)" in out, out


def test_cli_extract_skips_complete_and_fails_on_bad_videos(env, tmp_path, capsys):
    from clipae.cli import main

    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "ok1.mp4", seconds=0.8)
    make_corrupt(vids / "broken.mp4")
    conf = tmp_path / "small.json"
    conf.write_text(json.dumps({"resize_short": 36, "crop_size": 32, "clip": {"model_name": env.cfg.clip.model_name},
                                "tvl1": {"nscales": 1, "warps": 1, "inner_iterations": 1, "outer_iterations": 1}}))
    args = ["extract", "--videos", str(vids), "--store", str(tmp_path / "st"), "--features", "i3d_rgb,vggish",
            "--weights-dir", str(env.wdir), "--device", "cpu", "--config", str(conf), "--no-progress"]
    assert main(args) == 2  # no weights and no opt-in: a clear error before any video
    err = capsys.readouterr().err
    # every missing file in one message, the opt-in named, and no store created for nothing
    assert "2 weights files are missing or wrong" in err and err.count("put the file at") == 2, err
    assert "--allow-random-weights" in err and not (tmp_path / "st").exists()
    assert main([*args, "--allow-random-weights"]) == 1
    out, err = capsys.readouterr()
    assert "1 extracted" in out and "1 failed" in out and "broken: " in out and "probe" in out
    assert "note: randomly initialised networks for i3d_rgb, vggish" in err, err
    store = FeatureStore.open(tmp_path / "st")
    assert store.list_videos() == ["ok1"] and store.features_of("ok1") >= {"i3d_rgb", "vggish", "audio_mask"}
    (vids / "broken.mp4").unlink()
    assert main([*args, "--allow-random-weights"]) == 0
    out, err = capsys.readouterr()
    assert "1 already complete" in out and "warning" not in err
    assert "note: randomly initialised networks" not in err  # nothing was computed with them this time

    # one video file as --videos; made with other I3D settings than ok1: the store now mixes two ways
    make_video(tmp_path / "ok2.mp4", seconds=1.2)  # (other content: the same bytes would be the same video)
    conf2 = tmp_path / "small2.json"
    conf2.write_text(conf.read_text().replace('"resize_short": 36', '"resize_short": 40'))
    one = [a if a != str(vids) else str(tmp_path / "ok2.mp4") for a in args]
    assert main([*[a if a != str(conf) else str(conf2) for a in one], "--allow-random-weights"]) == 0
    out, err = capsys.readouterr()
    assert "1 extracted" in out and store.list_videos() == ["ok1", "ok2"]
    assert "warning: features in this store were made in different ways" in err, err
    assert "i3d_rgb: made 2 different ways" in err and "vggish" not in err.split("i3d_rgb: made")[1], err
    assert store.summary()["configs_per_feature"] == {"i3d_rgb": 2, "vggish": 1}
    assert store.summary()["random_init_features"] == {"i3d_rgb": 2, "vggish": 2}  # which features, in how many videos

    # an id that now names another file: everything stored for it is redone, and the summary says so
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"ok1,{tmp_path / 'ok2.mp4'}\n")
    assert main([*[a if a != str(vids) else str(manifest) for a in args], "--allow-random-weights"]) == 0
    out = capsys.readouterr().out
    assert f"ok1: replaced everything stored for it: its source changed (was {(vids / 'ok1.mp4').resolve()})" in out, out


def test_cli_interrupt_does_not_wait_for_worker_threads(tmp_path):
    """Ctrl-C exits at once (130) even while worker threads (decoders, the networks' thread) are busy: they
    would otherwise finish their window first, minutes on a CPU. (Stores stay consistent: atomic publishes.)"""
    import subprocess
    import sys

    script = (
        "import argparse, sys, threading, time\n"
        "import clipae.cli as cli\n"
        "def work(args):\n"
        "    threading.Thread(target=time.sleep, args=(300,)).start()  # a busy non-daemon worker\n"
        "    raise KeyboardInterrupt\n"
        "def parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.set_defaults(func=work)\n"
        "    return p\n"
        "cli.build_parser = parser\n"
        "sys.exit(cli.main([]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and "interrupted" in r.stderr, r


def test_cli_sigterm_is_handled_like_ctrl_c(tmp_path):
    """SIGTERM (timeout, docker stop, SLURM) killed the process with no message and none of Ctrl-C's cleanup
    (a training run left its half-written temporary checkpoint); now: the same path, a message, exit 143."""
    import subprocess
    import sys

    script = (
        "import argparse, os, signal, sys, time\n"
        "import clipae.cli as cli\n"
        "def work(args):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)\n"
        "    finally:\n"
        "        open(sys.argv[1], 'w').write('cleanup ran')\n"
        "def parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.set_defaults(func=work, command='extract')\n"
        "    return p\n"
        "cli.build_parser = parser\n"
        "sys.exit(cli.main([]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "done")], cwd=root, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 143 and "clipae extract: terminated (SIGTERM); run the same command again" in r.stderr, r
    assert (tmp_path / "done").read_text() == "cleanup ran"


def test_cli_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`clipae store ls S | head` printed "error: [Errno 32] Broken pipe"."""
    import subprocess
    import sys

    script = (
        "import argparse, sys\n"
        "import clipae.cli as cli\n"
        "def work(args):\n"
        "    for i in range(200000): print(f'video_{i:06d}\\tT=25')\n"
        "def parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.set_defaults(func=work, command='store')\n"
        "    return p\n"
        "cli.build_parser = parser\n"
        "sys.exit(cli.main([]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(f"{sys.executable} -c \"$SCRIPT\" | head -1; echo \"rc=${{PIPESTATUS[0]}}\"", shell=True,
                       executable="/bin/bash", cwd=root, capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "SCRIPT": script})
    assert r.stdout.splitlines() == ["video_000000\tT=25", "rc=141"], r
    assert r.stderr == "", r.stderr


def test_decord_failure_mid_stream_is_redone_with_ffmpeg(env, tmp_path, monkeypatch):
    from extractors import decode
    from extractors.errors import DecodeError

    def broken_iter(self):
        yield from []
        raise DecodeError(self.path, "simulated read error at frame 0", "decord")

    monkeypatch.setattr(decode.DecordFrames, "__iter__", broken_iter)
    cfg = replace(env.cfg, features=("clip_vitb16",))
    store = FeatureStore.create(tmp_path / "s")
    r = extract_video(env.video, "a", store, cfg, Extractors(cfg))
    assert r.decode_backend == "ffmpeg" and r.num_snippets == 4
    assert store.provenance("a")["clip_vitb16"].params["decode_backend"] == "ffmpeg"
    ref = env.store.load("a", ["clip_vitb16"])["clip_vitb16"]
    assert ((store.load("a")["clip_vitb16"] * ref).sum(1) > 0.999).all()
    cfg_strict = replace(cfg, decode_backend="decord")
    with pytest.raises(VideoError, match="simulated read error"):
        extract_video(env.video, "b", store, cfg_strict, Extractors(cfg_strict))


_TRITON_PIPELINE = """
import json, sys
from dataclasses import replace
from pathlib import Path
import numpy as np
from extractors.pipeline import Extractors, extract_many
from storage import FeatureStore
from tests.media import make_video, small_extract_config

d = Path(sys.argv[1])
(d / "w").mkdir()
cfg = small_extract_config(d / "w", features=("i3d_flow",), tvl1=replace(small_extract_config(d).tvl1, nscales=2,
                           inner_iterations=3, outer_iterations=2))
videos = [(f"v{i}", make_video(d / f"v{i}.mp4", seconds=1.4, size=(64, 48), source="testsrc2")) for i in range(2)]
out = {}
for backend in ("torch", "triton"):
    c = replace(cfg, video_workers=2, tvl1=replace(cfg.tvl1, backend=backend))
    models = Extractors(c)
    store = FeatureStore.create(d / backend)
    res = extract_many(videos, store, c, models)
    out[backend] = {"ok": [r.ok for r in res], "concurrent": models.concurrent_flow,
                    "backend_param": store.provenance("v0")["i3d_flow"].params.get("tvl1_backend")}
for v, _ in videos:
    a, b = FeatureStore.open(d / "torch").load(v)["i3d_flow"], FeatureStore.open(d / "triton").load(v)["i3d_flow"]
    out[v] = float(np.abs(a - b).max() / np.abs(a).max())
print(json.dumps(out))
"""


def test_triton_tvl1_backend_in_the_pipeline(tmp_path):
    """backend='triton' through extract_many with 2 workers (TV-L1 outside the lock): the torch backend's features.

    A subprocess runs Triton's interpreter (the CPU stand-in for a GPU; see tests/test_tvl1.py).
    """
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _TRITON_PIPELINE, str(tmp_path)], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["torch"]["ok"] == res["triton"]["ok"] == [True, True], res
    assert res["triton"]["concurrent"] and res["triton"]["backend_param"] == "triton", res
    assert res["v0"] < 1e-3 and res["v1"] < 1e-3, res  # float rounding only


def test_shards_split_the_videos_between_processes(env, tmp_path, capsys):
    """`--shard I/N`: N processes (one per GPU) on the same videos and store extract disjoint shares that
    together cover every video, whatever order or listing each one was given."""
    from clipae.cli import main
    from extractors.manifest import in_shard, parse_shard

    ids = [f"video_{i:03d}" for i in range(400)]
    shares = [[v for v in ids if in_shard(v, i, 3)] for i in range(3)]
    assert sorted(sum(shares, [])) == ids and all(90 < len(s) < 180 for s in shares)  # each id in one share
    assert parse_shard(" 1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="0 <= I < N"):
            parse_shard(bad)

    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(4):
        make_video(vids / f"v{i}.mp4", seconds=0.7, size=(48, 32), fps=25 + i)  # (different bytes)
    conf = tmp_path / "small.json"
    conf.write_text(json.dumps({"resize_short": 36, "crop_size": 32}))
    args = ["extract", "--videos", str(vids), "--store", str(tmp_path / "st"), "--features", "i3d_rgb",
            "--weights-dir", str(env.wdir), "--device", "cpu", "--config", str(conf), "--no-progress",
            "--allow-random-weights"]
    mine = {}
    for i in range(2):
        assert main([*args, "--shard", f"{i}/2"]) == 0
        mine[i] = {f"v{k}" for k in range(4) if in_shard(f"v{k}", i, 2)}
        out, err = capsys.readouterr()
        assert f"shard {i}/2: {len(mine[i])} of the 4 videos" in err and f"{len(mine[i])} videos: " in out, (out, err)
    assert FeatureStore.open(tmp_path / "st").list_videos() == ["v0", "v1", "v2", "v3"]
    with pytest.raises(SystemExit):
        main([*args, "--shard", "2/2"])
    assert "0 <= I < N" in capsys.readouterr().err


def test_a_deleted_feature_array_is_recomputed_and_the_video_verifies(env, tmp_path):
    """The metadata still lists i3d_rgb, but its array is gone: not "already complete", redo that feature."""
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    before = store.load("a")
    shutil.rmtree(store.path / "videos" / "a" / "i3d_rgb")
    r = extract_video(env.video, "a", store, env.cfg, env.models)
    assert not r.skipped and r.computed == ["i3d_rgb"] and sorted(r.reused) == ["clip_vitb16", "i3d_flow", "vggish"]
    assert store.missing_arrays("a") == set() and store.verify("a") == []
    after = store.load("a")
    for name in ("i3d_rgb", "i3d_flow", "clip_vitb16", "vggish", "audio_mask"):
        assert np.array_equal(before[name], after[name]), name  # (i3d_rgb: deterministic on the CPU)


def test_a_missing_array_outside_the_run_features_fails_the_video_by_name(env, tmp_path):
    """Extracting only vggish cannot repair a lost i3d_flow: the write refuses rather than publish its metadata."""
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    shutil.rmtree(store.path / "videos" / "a" / "i3d_flow")
    shutil.rmtree(store.path / "videos" / "a" / "audio_mask")  # (makes vggish to-do, so the run writes)
    cfg = replace(env.cfg, features=("vggish",))
    [res] = extract_many([("a", env.video)], store, cfg, Extractors(cfg))
    assert not res.ok and res.stage == "store"
    assert "video 'a'" in str(res.error) and "['i3d_flow'] have no array on disk" in str(res.error)
    assert store.missing_arrays("a") == {"i3d_flow", "audio_mask"}  # (nothing was published)


def test_damaged_video_metadata_is_extracted_again_from_the_source(env, tmp_path):
    """A corrupt per-video zarr.json: nothing stored for the video can be trusted, so it is redone from its
    source (replace_all), not reported as complete nor left for the user to delete; the other video is unaffected."""
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    before = store.load("a", ["vggish", "audio_mask"])
    (store.path / "videos" / "a" / "zarr.json").write_text("{broken")
    cfg = replace(env.cfg, features=("vggish",))
    res = extract_many([("a", env.video), ("b", env.video)], store, cfg, Extractors(cfg))
    by_id = {r.video_id: r for r in res}
    assert by_id["a"].ok and by_id["a"].computed == ["vggish"] and "not valid JSON" in by_id["a"].repaired_damage
    assert by_id["b"].ok and by_id["b"].repaired_damage is None
    assert store.features_of("a") == {"vggish", "audio_mask"} and store.verify("a") == []
    after = store.load("a", ["vggish", "audio_mask"])
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_deleted_time_array_is_rewritten(env, tmp_path):
    """Every write rewrites the time coordinate; a video missing it was "complete" and never repaired."""
    store = FeatureStore.open(shutil.copytree(env.store.path, tmp_path / "s"))
    shutil.rmtree(store.path / "videos" / "a" / "time")
    assert store.missing_arrays("a") == {"time"}
    cfg = replace(env.cfg, features=("vggish",))
    r = extract_video(env.video, "a", store, cfg, Extractors(cfg))
    assert r.computed == ["vggish"] and store.missing_arrays("a") == set() and store.verify("a") == []


def test_cli_refuses_empty_paths_and_a_config_grid_unlike_the_stores(tmp_path, capsys):
    """Adversarial review: `--videos ""` extracted the current directory, `--store ""` made a store there,
    `--config ""` was ignored; a --config file's fps/snippet_frames/stride were silently replaced by an
    existing store's grid (while --fps was checked)."""
    from clipae.cli import main
    from storage import SnippetGrid

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    base = ["extract", "--allow-random-weights", "--device", "cpu", "--features", "vggish", "--no-progress"]
    for flag in ("--videos", "--store", "--config"):
        argv = {"--videos": str(tmp_path / "v"), "--store": str(tmp_path / "s"), flag: ""}
        assert main(base + [x for kv in argv.items() for x in kv]) == 2
        assert f"{flag}: empty path" in capsys.readouterr().err
    FeatureStore.create(tmp_path / "s", grid=SnippetGrid(25.0, 16, 16))
    (tmp_path / "c.yaml").write_text("fps: 30\nbatch_size: 4\n")
    assert main(base + ["--videos", str(tmp_path / "v"), "--store", str(tmp_path / "s"),
                        "--config", str(tmp_path / "c.yaml")]) == 2
    assert "fps: 30 differs from the store's grid (25 fps" in capsys.readouterr().err
    assert FeatureStore.open(tmp_path / "s").list_videos() == []


def test_python_callers_pass_paths_numpy_scalars_and_sets():
    """Review: the type checks refused a Path for weights_dir, numpy scalars, a set of features; a huge integer
    raised OverflowError past the config's error handling."""
    from extractors.config import ExtractConfig
    from extractors.errors import ConfigError

    cfg = ExtractConfig(weights_dir=Path("/tmp"), features={"vggish"}, batch_size=np.int64(4), fps=np.float32(25))
    assert cfg.features == ("vggish",) and cfg.weights_dir_path() == Path("/tmp")
    with pytest.raises(ConfigError, match=r"fps: must be a finite number, got 1000.*\.\.\."):
        ExtractConfig(fps=10**400)


def test_clip_frames_follow_a_stride_that_does_not_divide_the_snippet(env, tmp_path):
    """Snippets 16 frames long every 12: CLIP's frames are each snippet's own (start + position), so the
    stored features equal ClipExtractor.snippet_features on the decoded snippets."""
    cfg = replace(env.cfg, features=("clip_vitb16",), stride=12)
    store = FeatureStore.create(tmp_path / "s", grid=SnippetGrid(fps=25.0, snippet_frames=16, stride=12))
    r = extract_video(env.video, "a", store, cfg, env.models)
    stored = store.load("a")["clip_vitb16"]
    frames = np.stack([f for _, f in open_frames(env.video, probe_video(env.video), 25.0)])
    whole = [i for i in range(r.num_snippets) if 12 * i + 16 <= len(frames)]
    assert len(whole) >= 3
    direct = env.models.model("clip_vitb16").snippet_features(np.stack([frames[12 * i : 12 * i + 16] for i in whole]))
    assert_same_features(stored[whole], direct, rtol=1e-4)


def test_a_real_weights_file_is_hashed_into_the_provenance(env, tmp_path):
    """With a weights file present (an I3D checkpoint in the published layout), the feature's provenance
    holds that file's sha256 and random_init False; every other test extracts with random networks."""
    import hashlib

    from tests.test_weights import _i3d_state_dict, _put, _save

    path = _put(tmp_path / "w", "i3d_rgb", _save(_i3d_state_dict(3)))
    cfg = replace(env.cfg, features=("i3d_rgb",), weights_dir=str(tmp_path / "w"), allow_random_weights=False)
    store = FeatureStore.create(tmp_path / "s")
    extract_video(env.video, "a", store, cfg, Extractors(cfg))
    p = store.provenance("a")["i3d_rgb"]
    assert p.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and p.random_init is False
    assert p.preprocess_hash == preprocess_hash(cfg, "i3d_rgb", random_init=False)


def test_non_finite_features_fail_the_video_before_the_store(env, tmp_path, monkeypatch):
    """A network's NaN fails the video at the network's own stage, and nothing is written."""
    import extractors.pipeline as P

    real = P._clip

    def nan_first_row(win, models):
        out = real(win, models)
        out[0, 0] = np.nan
        return out
    monkeypatch.setattr(P, "_clip", nan_first_row)
    cfg = replace(env.cfg, features=("clip_vitb16",))
    store = FeatureStore.create(tmp_path / "s")
    with pytest.raises(VideoError, match=r"clip_vitb16: produced non-finite values"):
        extract_video(env.video, "a", store, cfg, env.models)
    assert store.list_videos() == []


@pytest.mark.parametrize(("feature", "change"), [
    ("i3d_rgb", {"resize_short": 40}), ("i3d_rgb", {"crop_size": 28}), ("i3d_rgb", {"fps": 30.0}),
    ("i3d_rgb", {"stride": 8}), ("i3d_flow", {"flow_bound": 10.0}), ("i3d_flow", {"crop_size": 28}),
    ("i3d_flow", {"tvl1": "epsilon"}), ("clip_vitb16", {"clip": "frames_per_snippet"}),
    ("vggish", {"vggish_final_relu": True}), ("vggish", {"vggish_postprocess": True}),
])
def test_every_setting_that_changes_a_feature_changes_its_hash(env, feature, change):
    """The preprocess hash decides whether stored features are reused: a setting that changes the values but
    not the hash (final_relu, flow_bound were each dropped once in a mutation audit) reuses stale features."""
    if change.get("tvl1") == "epsilon":
        change = {"tvl1": replace(env.cfg.tvl1, epsilon=0.02)}
    elif change.get("clip") == "frames_per_snippet":
        change = {"clip": replace(env.cfg.clip, frames_per_snippet=4)}
    for random_init in (True, False):
        assert preprocess_hash(replace(env.cfg, **change), feature, random_init) != \
            preprocess_hash(env.cfg, feature, random_init), (feature, change)
