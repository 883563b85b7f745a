"""Odd but real inputs found by probing many kinds of files (docs/extraction.md, "Odd inputs"): each a file made
with ffmpeg here, decoded to the right frames or failing with a clear message, never stored half-right."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from extractors.decode import open_frames
from extractors.errors import DecodeError
from extractors.manifest import ManifestError, discover_videos
from extractors.probe import probe_video
from extractors.vggish import centered_coverage
from tests.media import counter_levels, have_ffmpeg, make_counter_video, make_video

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe not on PATH")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def _frames(path: Path, backend: str = "auto") -> tuple[str, np.ndarray]:
    src = open_frames(path, probe_video(path), 25.0, backend)
    return src.backend, np.stack([f for _, f in src])


def test_mpeg2_in_mpegts_decodes_every_frame_in_order(tmp_path):
    """decord returned this file's frames 3.. as frames 0.. (B-frames, consistent-looking timestamps)."""
    path = tmp_path / "c.ts"
    _ffmpeg("-f", "lavfi", "-i", "color=black:s=32x24:r=25,geq=lum='16+3*N':cb=128:cr=128", "-frames:v", "60",
            "-c:v", "mpeg2video", "-q:v", "2", "-bf", "2", str(path))
    assert probe_video(path).decord_unsuitable() == "MPEG-TS container"
    backend, frames = _frames(path)
    assert backend == "ffmpeg" and len(frames) == 60
    np.testing.assert_allclose(counter_levels(frames, 60), np.arange(60), atol=0.6)


def test_more_than_8_bits_per_sample_is_decoded_by_ffmpeg(tmp_path):
    path = tmp_path / "ten.mkv"
    try:
        _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1", "-c:v", "ffv1", "-pix_fmt",
                "yuv420p10le", str(path))
    except subprocess.CalledProcessError as e:  # (every ffmpeg build has ffv1; keep the reason if not)
        pytest.skip(f"ffmpeg cannot encode 10-bit ffv1: {e.stderr[-200:]!r}")
    assert probe_video(path).decord_unsuitable() == "more than 8 bits per sample (yuv420p10le)"
    backend, frames = _frames(path)
    assert backend == "ffmpeg" and frames.shape == (25, 48, 64, 3)
    assert probe_video(make_video(tmp_path / "eight.mp4", seconds=0.4)).decord_unsuitable() is None


def test_resolution_change_mid_stream_keeps_the_first_size(tmp_path):
    """ffmpeg scales frames after the change to the first frame's size; reading them at the new size (what
    showinfo reports) scrambled every later frame and cut the video short."""
    parts = []
    for name, size, level in (("a", "64x48", 60), ("b", "96x80", 200)):
        parts.append(tmp_path / f"{name}.ts")
        _ffmpeg("-f", "lavfi", "-i", f"color=c=0x{level:02x}{level:02x}{level:02x}:s={size}:r=25", "-t", "2",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0", str(parts[-1]))
    path = tmp_path / "res_change.mkv"
    _ffmpeg("-i", f"concat:{parts[0]}|{parts[1]}", "-c", "copy", str(path))
    backend, frames = _frames(path, "ffmpeg")
    assert frames.shape == (100, 48, 64, 3)
    assert abs(frames[:45].mean() - 60) < 4 and abs(frames[55:].mean() - 200) < 4
    assert frames[55:].std(axis=(1, 2, 3)).max() < 3  # flat frames, not rows out of step


def test_truncated_stream_fails_instead_of_storing_a_prefix(tmp_path):
    full = tmp_path / "full.mp4"  # index at the front: a cut file still opens, and ffmpeg decodes what is left
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(full))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(DecodeError, match=r"decoded only \d+\.\d+ s of the 4\.00 s the video stream declares: "
                                          r"truncated or damaged") as e:
        _frames(cut, "ffmpeg")
    # the reason quotes ffmpeg's messages, not its progress or statistics lines nor showinfo's frame details
    assert not any(w in e.value.reason for w in ("frame=", "muxing overhead", "Parsed_showinfo", "Lavc", "Metadata"))
    assert len(_frames(full, "ffmpeg")[1]) == 100


def test_edit_list_cut_is_not_taken_for_damage(tmp_path):
    """A stream-copy cut (`-ss 3 -c copy`): the MP4 lists 250 frames, ffmpeg outputs the 175 after the edit
    list's lead-in. With the damage check counting frames against the container's count this failed as
    "damaged data" (decoder messages present), and a file name with "corrupt" in it counted as a decoder
    message. Only packets the decoder fails on count."""
    src = tmp_path / "src.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "10", "-c:v", "libx264", "-g", "100",
            "-pix_fmt", "yuv420p", str(src))
    (tmp_path / "corrupt_recovered").mkdir()
    cut = tmp_path / "corrupt_recovered" / "clip.mp4"
    _ffmpeg("-ss", "3", "-i", str(src), "-c", "copy", str(cut))
    probe = probe_video(cut)
    assert probe.nb_frames == 250  # (the whole GOP before the cut point is in the file)
    frames = _frames(cut, "ffmpeg")[1]
    assert len(frames) == 175


@pytest.mark.parametrize("default", [0, 1])
def test_several_video_streams_both_backends_decode_the_probed_one(tmp_path, default):
    """decord decodes the stream it finds best (here the larger) whatever the file marks default, while the
    probe and ffmpeg took the first: auto stored 160x120 frames under a 32x24 probe, and a fallback to
    ffmpeg switched streams. Now the default stream is decoded, by ffmpeg (decord cannot be told which)."""
    counter = make_counter_video(tmp_path / "cnt.mkv", 60)
    big = make_video(tmp_path / "big.mp4", seconds=2.4, size=(160, 120), audio=False)
    path = tmp_path / f"two_{default}.mp4"
    _ffmpeg("-i", str(counter), "-i", str(big), "-map", "0:v", "-map", "1:v", "-c", "copy",
            f"-disposition:v:{default}", "default", f"-disposition:v:{1 - default}", "0", str(path))
    probe = probe_video(path)
    assert probe.video_streams == 2 and probe.video_index == default
    assert "2 video streams" in probe.decord_unsuitable()
    with pytest.raises(DecodeError, match="2 video streams: decord cannot be told which"):
        _frames(path, "decord")
    backend, frames = _frames(path)
    assert backend == "ffmpeg" and frames.shape == ((60, 24, 32, 3) if default == 0 else (60, 120, 160, 3))
    if default == 0:
        np.testing.assert_allclose(counter_levels(frames, 60), np.arange(60), atol=0.6)


def test_a_one_frame_still_track_before_the_video_is_not_the_video(tmp_path):
    """A still image stored as a one-frame video track (not flagged as cover art), first in the file, neither
    track marked default: the longer track is the video (the first one failed as 'decoded only 0.04 s')."""
    counter = make_counter_video(tmp_path / "cnt.mkv", 60)
    still = tmp_path / "still.png"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=200x200", "-frames:v", "1", str(still))
    path = tmp_path / "still_first.mkv"
    _ffmpeg("-i", str(still), "-i", str(counter), "-map", "0", "-map", "1:v", "-c:v:0", "mjpeg", "-c:v:1", "copy",
            "-disposition:v:0", "0", "-disposition:v:1", "0", str(path))
    probe = probe_video(path)
    assert probe.video_streams == 2 and probe.video_index == 1 and (probe.width, probe.height) == (32, 24)
    backend, frames = _frames(path)
    assert frames.shape == (60, 24, 32, 3)
    np.testing.assert_allclose(counter_levels(frames, 60), np.arange(60), atol=0.6)


def test_a_default_still_track_first_in_mp4_and_a_short_default_in_matroska(tmp_path):
    """The mp4 muxer marks its first track default, so a still before the video was 'the default stream';
    in Matroska a short default track beside a longer one was checked against the file's (longest) duration
    and failed as truncated. The longest tracks are the candidates, the default breaks ties."""
    counter = make_counter_video(tmp_path / "cnt.mkv", 60)
    still = tmp_path / "still.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=red:s=200x200", "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            str(still))
    first = tmp_path / "still_first.mp4"
    _ffmpeg("-i", str(still), "-i", str(counter), "-map", "0:v", "-map", "1:v", "-c", "copy", str(first))
    short = make_video(tmp_path / "short.mp4", seconds=1.0, size=(160, 120), audio=False)
    mkv = tmp_path / "default_short.mkv"
    _ffmpeg("-i", str(counter), "-i", str(short), "-map", "0:v", "-map", "1:v", "-c", "copy",
            "-disposition:v:0", "0", "-disposition:v:1", "default", str(mkv))
    for path in (first, mkv):
        probe = probe_video(path)
        assert (probe.width, probe.height) == (32, 24) and probe.duration == pytest.approx(2.4, abs=0.05), path
        frames = _frames(path)[1]
        np.testing.assert_allclose(counter_levels(frames, 60), np.arange(60), atol=0.6)
    # a video under 1 s: the 1 s of slack must not make the still a candidate
    short_counter = make_counter_video(tmp_path / "cnt22.mkv", 22)
    short_first = tmp_path / "still_first_short.mp4"
    _ffmpeg("-i", str(still), "-i", str(short_counter), "-map", "0:v", "-map", "1:v", "-c", "copy", str(short_first))
    assert (probe_video(short_first).width, probe_video(short_first).video_index) == (32, 1)


def test_matroska_video_with_longer_audio_has_the_video_length(tmp_path):
    """The container's duration covers the longest stream (30 s of audio beside 3 s of video): the probe read
    it as the video's, so decord was refused and the progress total was 10x too big. The stream's own
    DURATION tag gives 3 s."""
    v = make_video(tmp_path / "v.mp4", seconds=3.0, audio=False)
    path = tmp_path / "long_audio.mkv"
    _ffmpeg("-i", str(v), "-f", "lavfi", "-t", "30", "-i", "sine=f=440:sample_rate=16000", "-map", "0:v", "-map", "1:a",
            "-c:v", "copy", "-c:a", "pcm_s16le", str(path))
    probe = probe_video(path)
    assert probe.duration == pytest.approx(3.0, abs=0.05)
    assert _frames(path)[0] == "decord"


def test_mpegts_sample_rate_change_keeps_the_audio_intact(tmp_path):
    """In MPEG-TS a PES packet's later audio frames get estimated timestamps, at the old rate after a change
    (44.1 -> 22.05 kHz); gap filling by timestamp then cut 50 ms holes into the audio. In TS the samples stay
    in order as decoded."""
    from extractors.audio_decode import decode_audio

    parts = []
    for i, (freq, rate) in enumerate(((440, 44100), (880, 22050))):
        parts.append(tmp_path / f"c{i}.ts")
        _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i",
                f"sine=f={freq}:sample_rate={rate}", "-t", "2", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1", "-ar", str(rate),
                "-output_ts_offset", str(2.0 * i), "-f", "mpegts", str(parts[-1]))
    path = tmp_path / "rate_change.ts"
    path.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    wav = decode_audio(path, probe_video(path))
    assert len(wav) / 16000 == pytest.approx(4.1, abs=0.1)
    second = wav[int(2.3 * 16000) : int(3.8 * 16000)]
    rms = np.sqrt(np.mean(second[: len(second) // 800 * 800].reshape(-1, 800) ** 2, axis=1))
    assert rms.min() > 0.5 * rms.max()  # no holes
    spectrum = np.abs(np.fft.rfft(second))
    assert abs(np.argmax(spectrum) * 16000 / len(second) - 880) < 5


def test_matroska_remux_with_timestamps_kept_is_not_called_truncated(tmp_path):
    """A recording remuxed to Matroska keeping its timestamps (-copyts) starts at 1000 s; Matroska's duration
    counts from 0, so the 3 s video was declared 1003 s long and failed as 'truncated or damaged file'."""
    ts = tmp_path / "rec.ts"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-output_ts_offset", "1000", str(ts))
    path = tmp_path / "rec.mkv"
    _ffmpeg("-copyts", "-i", str(ts), "-map", "0:v", "-c", "copy", str(path))
    probe = probe_video(path)
    assert probe.video_start == pytest.approx(1001.4, abs=0.1) and probe.duration == pytest.approx(3.0, abs=0.05)
    for backend in ("auto", "ffmpeg"):
        assert _frames(path, backend)[1].shape[0] == 75


def test_names_ffmpeg_would_misread(tmp_path):
    """A leading dash (an option to ffmpeg) or a colon (a protocol): decoded like any other name."""
    src = make_counter_video(tmp_path / "src.mp4", 20)
    for name in ("-dash.mp4", "a:b.mp4"):
        path = shutil.copy(src, tmp_path / name)
        for backend in ("decord", "ffmpeg"):
            assert len(_frames(Path(path), backend)[1]) == 20, (name, backend)


def test_directory_scan_skips_hidden_files_and_reports_bad_names(tmp_path):
    make_counter_video(tmp_path / "good.mp4", 20)
    (tmp_path / "._good.mp4").write_bytes(b"\0\5\26\7")  # macOS AppleDouble metadata: not a video
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")  # broken: kept, so that it fails visibly
    assert discover_videos(tmp_path) == [("gone", tmp_path / "gone.mp4"), ("good", tmp_path / "good.mp4")]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "caf\udce9.mp4").write_bytes(b"x")  # a Latin-1 file name: not valid UTF-8
    with pytest.raises(ManifestError, match=r"(?s)not valid UTF-8.*list them in a manifest"):
        discover_videos(bad)


def test_audio_mask_excludes_the_silence_before_a_late_audio_stream():
    # 4 snippets of 16 frames at 25 fps (centres 0.32, 0.96, 1.60, 2.24 s); audio from 1.5 s to 2.6 s at 16 kHz
    centers = [0.32, 0.96, 1.60, 2.24]
    cover = centered_coverage(int(2.6 * 16000), 16000, centers, first_sample=int(1.5 * 16000))
    assert (cover > 0.5).tolist() == [False, False, True, True]
    assert (centered_coverage(int(2.6 * 16000), 16000, centers) > 0.5).all()  # (what the padding looked like)


@pytest.mark.parametrize("name, vargs, aargs", [
    ("h264_aac.mkv", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], ["-c:a", "aac"]),
    ("vp9_opus.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-pix_fmt", "yuv420p"], ["-c:a", "libopus"]),
    ("mjpeg.avi", ["-c:v", "mjpeg"], []),
    ("mjpeg_pcm.avi", ["-c:v", "mjpeg"], ["-c:a", "pcm_s16le"]),
])
def test_truncated_matroska_and_avi_fail_with_or_without_audio(tmp_path, name, vargs, aargs):
    """Cut in half, these were stored as shorter videos: Matroska with an audio track (no stream duration; its
    DURATION tag was not used once an audio stream was there) and AVI (ffprobe estimates the duration from
    what is indexed: 2 s left of 4; the header's 100-frame count says 4)."""
    full = tmp_path / name
    audio = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"] if aargs else []
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", *audio, "-t", "4", *vargs, *aargs,
            "-metadata", "com.apple.quicktime.model=iPhone 12", str(full))  # (a dotted key, as phones write)
    assert len(_frames(full)[1]) == 100
    data = full.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 2])
    probe = probe_video(cut)
    assert probe.declared_length == pytest.approx(4.0, abs=0.05)
    with pytest.raises(DecodeError, match="truncated or damaged") as e:
        _frames(cut)
    noise = ("Lavc", "Metadata", "encoder", "Stream #", "iPhone", "Guessed Channel Layout")  # (info, not reasons)
    assert not any(w in e.value.reason for w in noise), e.value.reason


#: Frames (at 25 fps) with a flash and a beep: uneven gaps (1.48, 2.0, 2.52, 1.48 s), so that no shift but 0
#: maps the beeps onto flashes.
_EVENTS = (25, 62, 112, 175, 212)


def _flash_beep_ts(path: Path) -> None:
    """10 s MPEG-TS: a white frame and a 20 ms 1 kHz beep at each of _EVENTS, GOP of 2 s with B-frames."""
    lum = "+".join(f"eq(N\\,{k})" for k in _EVENTS)
    beep = "+".join(f"between(t\\,{k / 25:.2f}\\,{k / 25 + 0.02:.2f})" for k in _EVENTS)
    _ffmpeg("-f", "lavfi", "-i", f"color=black:s=64x48:r=25,geq=lum='if({lum}\\,235\\,16)':cb=128:cr=128",
            "-f", "lavfi", "-i", f"aevalsrc='if({beep}\\,sin(2*PI*1000*t)\\,0)':s=48000", "-t", "10",
            "-c:v", "libx264", "-g", "50", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))


@pytest.mark.parametrize("keep_from", [0.0, 0.33, 0.5])
def test_mpegts_cut_mid_gop_keeps_audio_in_sync(tmp_path, keep_from):
    """A TS cut at an arbitrary packet starts mid-GOP: the decoder drops the frames before the first keyframe,
    so the first frame comes up to a GOP after the stream's start time. Audio aligned to the start time was late
    by that much (0.72 s at a third, 1.00 s at half): the flashes and beeps must coincide."""
    from extractors.audio_decode import decode_audio

    src = tmp_path / "src.ts"
    _flash_beep_ts(src)
    data = src.read_bytes()
    n = len(data) // 188
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[int(n * keep_from) * 188 :])
    probe = probe_video(cut)
    _, frames = _frames(cut)
    flashes = np.flatnonzero(frames.mean(axis=(1, 2, 3)) > 100) / 25.0
    wav = decode_audio(cut, probe)
    onsets = np.flatnonzero(np.diff((np.abs(wav) > 0.1).astype(int)) == 1) / 16000.0
    beeps = onsets[np.concatenate([[True], np.diff(onsets) > 0.5])] if len(onsets) else onsets
    assert len(flashes) >= 2 and len(beeps) >= 2, (flashes, beeps)
    for b in beeps:
        assert np.min(np.abs(flashes - b)) < 0.03, (flashes, beeps)


def test_damaged_audio_data_fails_the_video(tmp_path):
    """Bytes damaged in the audio stream only (the video is clean): 67 of 275 AAC packets failed to decode and
    were stored as silence, as a good video. Now the video fails at stage "audio", like damaged video data."""
    import random

    from extractors.audio_decode import decode_audio
    from extractors.errors import VideoError

    aac = tmp_path / "a.aac"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:a", "aac", "-b:a", "128k",
            str(aac))
    data = bytearray(aac.read_bytes())
    rng = random.Random(2)
    for i in range(int(len(data) * 0.3), int(len(data) * 0.6)):
        if rng.random() < 0.01:
            data[i] = rng.randrange(256)
    bad = tmp_path / "a_bad.aac"
    bad.write_bytes(bytes(data))
    clean, damaged = tmp_path / "clean.mp4", tmp_path / "damaged.mp4"
    for src, out in ((aac, clean), (bad, damaged)):
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-i", str(src), "-t", "6", "-c:v", "libx264",
                "-preset", "ultrafast", "-c:a", "copy", "-shortest", str(out))
    assert decode_audio(clean, probe_video(clean)).size > 5 * 16000
    with pytest.raises(VideoError, match=r"damaged audio data: \d+ packets could not be decoded") as e:
        decode_audio(damaged, probe_video(damaged))
    assert e.value.stage == "audio"


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_last_frame_held_for_seconds_is_not_truncation(tmp_path, ext):
    """A screen recording or slideshow ending on a still: the last packet lasts 3 s. It failed as "decoded only
    4.0 s of the 7.0 s": now that frame is held to the end of its packet (Matroska stores no per-frame duration:
    there, to the declared end when ffmpeg read the file without complaint)."""
    base = tmp_path / f"base.{ext}"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=4", "-c:v", "libx264", "-preset", "ultrafast",
            "-bf", "0", str(base))
    held = tmp_path / f"held.{ext}"
    _ffmpeg("-i", str(base), "-c", "copy", "-bsf:v", "setts=duration=if(eq(N\\,99)\\,3/TB\\,DURATION)", str(held))
    probe = probe_video(held)
    assert probe.declared_length == pytest.approx(6.96, abs=0.05)
    _, frames = _frames(held, "ffmpeg")
    assert len(frames) == 174  # (3.96 + 3 s)
    assert np.array_equal(frames[99], frames[-1])  # (the last frame, held)


def test_h264_copied_into_avi_is_not_truncation(tmp_path):
    """ffmpeg writes H.264 into AVI at twice the rate with filler ticks (500 "frames" of 1/50 s for 250):
    the declared length was taken as 500 / r_frame_rate = 20 s for a 10 s video."""
    mp4, avi = tmp_path / "x.mp4", tmp_path / "x.avi"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=10", "-c:v", "libx264", "-preset",
            "ultrafast", str(mp4))
    _ffmpeg("-i", str(mp4), "-c", "copy", str(avi))
    assert probe_video(avi).declared_length == pytest.approx(10.0, abs=0.05)
    assert len(_frames(avi, "ffmpeg")[1]) == 250


def test_mpegts_with_a_long_lead_in_or_a_timestamp_jump_is_not_damage(tmp_path):
    """A TS cut 1 s into a 10 s GOP (x264's default keyint 250): the ~9 s ahead of the first keyframe gave 224
    decoder errors, counted as damaged data. Two TS recordings joined with `cat` (a timestamp jump of 1,000 s):
    ffprobe's duration, estimated from the timestamps, declared 1,010 s. Neither is a broken file."""
    src = tmp_path / "k250.ts"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=20", "-c:v", "libx264", "-preset",
            "ultrafast", "-g", "250", str(src))
    data = src.read_bytes()
    n = len(data) // 188
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[int(n * 0.05) * 188 :])
    probe = probe_video(cut)
    assert probe.first_frame_time - probe.video_start > 5.0  # (the lead-in)
    assert 200 <= len(_frames(cut, "ffmpeg")[1]) <= 260
    part, moved = tmp_path / "a.ts", tmp_path / "b.ts"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=4", "-c:v", "libx264", "-preset",
            "ultrafast", str(part))
    _ffmpeg("-i", str(part), "-c", "copy", "-output_ts_offset", "1000", str(moved))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() + moved.read_bytes())
    assert 180 <= len(_frames(joined, "ffmpeg")[1]) <= 220


def test_missing_files_say_which_kind(tmp_path):
    from extractors.errors import VideoError

    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (tmp_path / "dir.mp4").mkdir()
    for name, words in (("loop.mp4", "looping symbolic link"), ("gone.mp4", "deleted.mp4"),
                        ("dir.mp4", "not a regular file"), ("none.mp4", "file does not exist")):
        with pytest.raises(VideoError, match=words):
            probe_video(tmp_path / name)
