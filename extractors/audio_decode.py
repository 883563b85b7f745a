"""The audio track of a video for VGGish: :func:`decode_audio` gives 16 kHz mono float32 (the mean of the
channels, resampled with resampy's kaiser_best as VGGish's released front end does), aligned to the first
video frame, gaps filled with zeros, damaged audio data refused.

docs/extraction.md explains the choices.
"""
from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from extractors.errors import VideoError
from extractors.probe import (
    FFMPEG_LIBRARY_MESSAGE,
    FFMPEG_PACKET_FAILED,
    VideoProbe,
    ffmpeg_input,
    float_or_none,
    probe_entries,
    process_deadline,
)

_log = logging.getLogger(__name__)


def video_origin(probe: VideoProbe) -> float:
    """The time (on the streams' own timeline) that is 0 for frames and audio: the first decodable frame's."""
    t = probe.first_frame_time if probe.first_frame_time is not None else probe.video_start
    return t or 0.0


def audio_lead_samples(probe: VideoProbe, sample_rate: int) -> int:
    """Samples of silence ``decode_audio`` puts before an audio stream that starts after the first video frame
    (0 otherwise): not part of the audio track, so not counted as audio in the audio mask."""
    if not probe.has_audio:
        return 0
    return max(0, int(round(((probe.audio_start or 0.0) - video_origin(probe)) * sample_rate)))


#: A jump in the audio timestamps larger than this is a gap, filled with zeros (ffmpeg's aresample
#: min_hard_comp): above container timestamp rounding (1 ms in Matroska) and frame jitter, well below one
#: VGGish patch (0.96 s). Smaller mismatches are left alone, not stretched.
AUDIO_GAP_SECONDS = 0.02

#: ffmpeg's resampler set to resampy's kaiser_best (50 zero crossings each side, rolloff 0.9173, Kaiser beta
#: 12.98; see extractors.vggish.KAISER_BEST), which VGGish's released front end resamples with. ffmpeg's
#: default filter (32 taps, cutoff 0.97, beta 9) gave log-mel up to 0.30 off resampy's on bigbuckbunny.mp4's
#: 48 kHz track (top bands); this one 0.02 (BENCHMARKS.md / tests/test_decode.py).
SWR_KAISER_BEST = "filter_size=100:cutoff=0.9173473712608761:filter_type=kaiser:kaiser_beta=12.984583735502994"


def _run_audio_decoder(path, cmd: list[str], channels: int, timeout: float) -> tuple[np.ndarray, int, str]:
    """Run ffmpeg writing interleaved float32 samples; return (mono mean of the channels, exit code, stderr).

    Read in chunks and averaged as they come, so memory holds the mono track only (a 30-minute 5.1 track
    would be 0.7 GB interleaved)."""
    frame_bytes = 4 * channels
    chunk = frame_bytes * 65536
    parts: list[np.ndarray] = []
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        except OSError as e:
            raise VideoError(str(path), "audio", f"ffmpeg failed to run: {e}") from e
        with process_deadline(proc, timeout) as timed_out:
            rest = b""
            while True:
                data = proc.stdout.read(chunk)
                if not data:
                    break
                data = rest + data
                usable = len(data) - len(data) % frame_bytes
                rest = data[usable:]
                x = np.frombuffer(data[:usable], dtype=np.float32)
                parts.append(x.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else x.copy())
            returncode = proc.wait()
        if timed_out.is_set():
            raise VideoError(str(path), "audio", f"ffmpeg did not finish decoding the audio within {timeout:.0f} s")
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return wav, returncode, stderr


def _per_frame_timestamps(probe: VideoProbe) -> bool:
    """Whether the container gives every audio frame its own timestamp (so a jump in them is a real gap)."""
    names = set(str(probe.container or "").split(","))
    return bool(names & {"mov", "mp4", "matroska", "webm"})


def _first_audio_frame_time(path) -> float | None:
    """Time of the first decoded audio frame (None if ffprobe cannot say).

    Not the stream's start_time: for Opus and Vorbis that counts the codec's pre-skip samples, which the
    decoder drops, so audio placed by it came 7 ms (Opus in WebM) / 3 ms (Vorbis in Matroska) early."""
    # Up to 50 packets: the first ones may not decode (damaged) or be discarded (an MP4 edit list's lead-in).
    for f in probe_entries(path, "a:0", "%+#50", "frames", "pts_time,best_effort_timestamp_time"):
        t = float_or_none(f.get("pts_time"))
        t = t if t is not None else float_or_none(f.get("best_effort_timestamp_time"))
        if t is not None:
            return t
    return None


#: Audio packets per second assumed when judging how many failed: an upper bound for the usual codecs (AAC at
#: 48 kHz 47, MP3 38, AC-3 31, Opus 50), so the failed share is never overstated.
AUDIO_PACKETS_PER_SECOND = 50.0


def _check_audio_undamaged(path, stderr: str, seconds: float) -> None:
    """Damaged audio data must fail like damaged video (``FfmpegFrames._check_undamaged``): the decoder drops
    the packets it fails on, and the gap filling would store their time as silence, audio the network never
    heard. Fails when more than ``max(2, 0.5%)`` of the packets failed (ffmpeg's per-packet error lines; the
    count of packets estimated from the length at ``AUDIO_PACKETS_PER_SECOND``)."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    dropped = sum(1 for ln in lines if FFMPEG_PACKET_FAILED.match(ln))
    if dropped > max(2, 0.005 * seconds * AUDIO_PACKETS_PER_SECOND):
        first = next((ln for ln in lines if FFMPEG_LIBRARY_MESSAGE.match(ln)), None)
        raise VideoError(str(path), "audio", f"damaged audio data: {dropped} packets could not be decoded (of about "
                         f"{seconds * AUDIO_PACKETS_PER_SECOND:.0f}{'; first: ' + first if first else ''}); repair or "
                         "re-encode the file")


def decode_audio(path: str | Path, probe: VideoProbe, sample_rate: int = 16000) -> np.ndarray | None:
    """Mono float32 waveform at ``sample_rate``, sample 0 at the first video frame; None without audio.

    The audio stream may start before or after the video (its first decoded frame's time against the video
    stream's start): it is trimmed or zero-padded so both share the time axis the snippet grid is defined on.
    A gap inside the stream (a dropped or cut stretch: timestamps jumping by more than ``AUDIO_GAP_SECONDS``)
    is filled with zeros, so later audio stays at its time instead of moving earlier by the gap's length.
    """
    if not probe.has_audio:
        return None
    # Mono is the plain mean of the channels, as VGGish's released front end takes it (vggish_input:
    # np.mean over channels). ffmpeg's own "-ac 1" downmix of float audio is not a mean: stereo comes out
    # as (L+R)/sqrt(2), 3 dB louder than the network was trained on. So ffmpeg keeps the stream's channel
    # count and we average here. (A stream whose channel count changes midway keeps the first count: ffmpeg
    # remixes the other segments with its own matrix first, so those are not a plain mean. Documented.)
    channels = probe.audio_channels or 1
    if probe.audio_channels is None:
        _log.warning("%s: ffprobe gives no channel count for the audio stream: downmixed by ffmpeg's -ac 1, "
                     "not averaged (stereo comes out 3 dB louder than the mean)", path)
    # Gaps: the second aresample (at the output rate) fills jumps in the decoded frames' timestamps with
    # zeros, so audio after a gap stays at its time. The start is aligned below, from the first decoded
    # frame's time. (Not with aresample's first_pts: it pads again from the start whenever ffmpeg rebuilds the
    # filter graph, e.g. at a mid-stream sample-rate change; and not with -copyts, which turns off
    # ffmpeg's correction of MPEG-TS timestamp discontinuities.)
    # Only where every audio frame carries its own timestamp (MP4/MOV, Matroska/WebM): in MPEG-TS/PS a PES
    # packet's later frames get estimated times, wrong after a mid-stream sample-rate change (44.1 -> 22.05
    # kHz: 50 ms holes every few hundred ms), so there the samples stay in order as decoded.
    gaps = f",aresample=async=1:min_hard_comp={AUDIO_GAP_SECONDS}" if _per_frame_timestamps(probe) else ""
    # The output keeps the stream's own layout, pinned by aformat: "-ac N" alone asks for ffmpeg's default
    # layout of N channels, and a stream in another one ("3.0" vs the default "2.1"; 6.0, 7.0, hexagonal,
    # octagonal) was remixed into it first, no longer a plain mean (3.0 came out 1.6 dB loud).
    layout = (f"aformat=channel_layouts={probe.audio_layout}:sample_fmts=flt,"
              if probe.audio_layout and probe.audio_channels else "")
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", ffmpeg_input(path), "-map", "0:a:0", "-vn",
        *([] if layout else ["-ac", str(channels)]),
        "-af", f"{layout}aresample={sample_rate}:{SWR_KAISER_BEST}{gaps}", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    wav, returncode, stderr = _run_audio_decoder(path, cmd, channels, timeout=3600.0)
    if returncode != 0 and wav.size == 0:
        msg = stderr.strip().splitlines()
        raise VideoError(str(path), "audio", f"cannot decode the audio stream ({msg[-1] if msg else 'ffmpeg error'})")
    _check_audio_undamaged(path, stderr, wav.size / sample_rate)
    wav = np.nan_to_num(wav, nan=0.0, posinf=0.0, neginf=0.0)
    start = _first_audio_frame_time(path)
    start = start if start is not None else (probe.audio_start or 0.0)
    shift = int(round((start - video_origin(probe)) * sample_rate))
    if shift > 0:
        wav = np.concatenate([np.zeros(shift, np.float32), wav])
    elif shift < 0:
        wav = wav[-shift:]
    return np.ascontiguousarray(wav, dtype=np.float32)
