"""Video and audio decoding for feature extraction.

* :func:`probe_video` reads the container with ffprobe (via ffmpeg-python).
* :func:`open_frames` streams RGB frames resampled to the store's frame rate, with
  decord first and ffmpeg as the fallback (see :func:`decord_is_consistent` for when
  decord's reading is not trusted).
* :func:`sample_and_hold` is the resampling rule shared by both backends: output frame
  ``k`` (time ``t_k = k / fps`` after the first frame) shows the source frame with the
  latest presentation timestamp at or before ``t_k`` -- the frame a player displays at
  that instant. It handles variable frame rate exactly and never looks ahead in time.
* :class:`FramePreprocessor` turns native frames into the I3D crop (short side
  ``resize_short`` bilinear, centre crop ``crop_size``), its grayscale (TV-L1 input)
  and, only for the frames CLIP samples, the CLIP crop (short side 224 bicubic, centre
  crop 224, as open_clip's eval transform). Native frames are dropped right away, so
  memory depends on the window size, never on the video length or resolution.
* :func:`decode_audio` gives 16 kHz mono float32 aligned to the first video frame.

docs/extraction.md explains the choices.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import queue
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from extractors.errors import DecodeError, VideoError

_log = logging.getLogger(__name__)

#: Timestamps closer than this (seconds) count as equal: decord reports float32 times.
TIME_EPS = 1e-4
#: Upper bound on native-resolution frames held at once by the decord backend (bytes).
DECODE_CHUNK_BYTES = 64 * 1024 * 1024
# The resampling rule's name, part of every feature's preprocess hash, is extractors.config.RESAMPLING_RULE:
# rename it there when the rule below changes.


# --------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class VideoProbe:
    """What ffprobe says about a file (None where the container does not say)."""

    path: str
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    avg_fps: float | None = None
    nb_frames: int | None = None
    duration: float | None = None  # video stream duration, else the container's (see _container_video_length)
    stream_duration: float | None = None  # the video stream's own duration (None if the container lacks it)
    video_start: float | None = None
    # When the first video frame a decoder can output is shown (on video_start's timeline): video_start, unless
    # the stream starts mid-GOP (a cut MPEG-TS), whose frames before the first keyframe cannot be decoded.
    first_frame_time: float | None = None
    # The length the video stream itself declares (None if it declares none): its duration, Matroska's
    # DURATION tag, or AVI's header frame count in its time base (an AVI's duration is estimated from what is
    # indexed, so a truncated AVI declares only what is left).
    declared_length: float | None = None
    audio_start: float | None = None
    audio_channels: int | None = None  # of the first audio stream
    audio_layout: str | None = None  # its channel layout as ffprobe names it ("stereo", "3.0", "hexagonal", ...)
    rotation: int = 0
    codec: str | None = None
    pix_fmt: str | None = None
    container: str | None = None  # ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "mpegts"
    video_index: int | None = None  # absolute index of the video stream decoded (see _pick_video_stream)
    video_streams: int = 0  # video streams in the file, cover art not counted

    def decord_unsuitable(self) -> str | None:
        """Why ``auto`` decodes this file with ffmpeg rather than decord, or None. Found by probing odd files
        (docs/extraction.md): decord returned MPEG-2 video in MPEG-TS shifted by up to a GOP (frames 3.. or 12..
        as frames 0..) with consistent-looking timestamps, and converts more than 8 bits per sample to RGB
        differently from ffmpeg (mean 3.8 grey levels off, further from the source than ffmpeg)."""
        if self.container and "mpegts" in self.container.split(","):
            return "MPEG-TS container"
        if self.pix_fmt and re.search(r"(9|10|12|14|16|48|64)(le|be)$", self.pix_fmt):
            return f"more than 8 bits per sample ({self.pix_fmt})"
        if self.video_streams > 1:  # decord picks its own stream and cannot be told which
            return f"{self.video_streams} video streams (decord cannot be told which to decode)"
        return None


def ffmpeg_input(path: str | Path) -> str:
    """``path`` as ffmpeg/ffprobe must be given it: absolute, behind the ``file:`` protocol, so that a name such
    as ``-clip.mp4`` is not read as an option nor ``a:b.mp4`` as protocol ``a``."""
    return "file:" + os.path.abspath(path)


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rate(v) -> float | None:
    try:
        r = Fraction(str(v))
    except (ValueError, ZeroDivisionError):
        return None
    return float(r) if r > 0 else None


def _rotation(stream: dict) -> int:
    rot = stream.get("tags", {}).get("rotate")
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            rot = side["rotation"]
    try:
        return int(round(float(rot))) % 360 if rot is not None else 0
    except (TypeError, ValueError):
        return 0


def _stream_seconds(stream: dict) -> float | None:
    """A stream's length in seconds: Matroska's DURATION tag ("HH:MM:SS.nnn", which ffmpeg's muxer writes as
    the stream's end on the file's timeline, from 0: so less the stream's start) where there is one, since
    ffprobe may report the file's duration as a Matroska stream's; else the stream's duration."""
    tag = next((v for k, v in (stream.get("tags") or {}).items() if k.upper() == "DURATION"), None)
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", str(tag or "").strip())
    if m:
        end = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        length = end - max(0.0, _float_or_none(stream.get("start_time")) or 0.0)
        if length > 0:
            return length
    return _float_or_none(stream.get("duration"))


def _pick_video_stream(video: list[dict]) -> dict:
    """The video stream to decode when a file has several: among the longest (within 1 s or 5%), the one marked
    default, else the first. A one-frame still stored as a video track (marked default by the mp4 muxer when
    it comes first) is not the video; streams of the same length are alternatives, and the default is the
    one players show. (ffmpeg's own choice, the largest picture, could be a still; decord's cannot be set, so
    such files are decoded with ffmpeg.)"""
    if not video:
        return {}
    lengths = [_stream_seconds(s) or 0.0 for s in video]
    longest = max(lengths)
    near = [s for s, n in zip(video, lengths) if n >= max(longest - max(1.0, 0.05 * longest), 0.5 * longest)]
    return next((s for s in near if s.get("disposition", {}).get("default")), near[0])


def _container_video_length(fmt: dict, video_start: float | None) -> float | None:
    """The video's length from the container's duration, for when the stream declares none.

    Matroska/WebM's duration counts from timestamp 0 (a recording remuxed with its timestamps kept, starting
    at 1000 s, says 1003 s for 3 s of video), other containers' from their first timestamp.
    """
    duration, start = _float_or_none(fmt.get("duration")), _float_or_none(fmt.get("start_time"))
    if duration is None:
        return None
    if "matroska" in str(fmt.get("format_name", "")).split(","):
        duration -= max(0.0, video_start or 0.0)
    elif start is not None and video_start is not None:
        duration -= max(0.0, video_start - start)
    return duration if duration > 0 else None


def _probe_entries(path, stream: str, interval: str, section: str, fields: str) -> list[dict]:
    """ffprobe's ``packets`` or ``frames`` of one stream over ``-read_intervals`` (empty if it cannot say)."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", stream, "-read_intervals", interval,
           "-show_entries", f"{section.rstrip('s')}={fields}", "-of", "json", ffmpeg_input(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=60)
        return json.loads(out.stdout or b"{}").get(section) or []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


def _first_packet_is_key(path: str | Path, index: int) -> bool | None:
    """Whether the first packet of stream ``index`` is a keyframe (None if ffprobe cannot say)."""
    packets = _probe_entries(path, str(index), "%+#1", "packets", "flags")
    return ("K" in str(packets[0].get("flags", ""))) if packets else None


#: Packets read to find the first decodable frame of a stream that starts mid-GOP: a 60 s GOP at 50 fps (the
#: read stops once 16 frames are out).
MID_GOP_PACKETS = 3000


@contextlib.contextmanager
def _deadline(proc: subprocess.Popen, seconds: float):
    """Kill ``proc`` after ``seconds``; on leaving, stop it if it still runs and close its stdout. Yields an Event
    set when the deadline killed it. (The timer is a daemon: it never holds up the interpreter's exit.)"""
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield timed_out
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _first_decoded_frame_time(path: str | Path, index: int, frames: int = 16, timeout: float = 120.0) -> float | None:
    """Presentation time of the first frame ffmpeg's decoder outputs for stream ``index`` (None if none within
    ``MID_GOP_PACKETS`` packets): the earliest of the first ``frames`` frames out (decode order is not display
    order). Decodes, so it is asked only when the stream does not start on a keyframe, and it stops as soon as
    those frames are out (0.1 s on a 4K stream, against 9 s for decoding 600 packets)."""
    cmd = ["ffprobe", "-v", "quiet", "-select_streams", str(index), "-read_intervals", f"%+#{MID_GOP_PACKETS}",
           "-show_entries", "frame=pts_time,best_effort_timestamp_time", "-of", "csv=p=0", ffmpeg_input(path)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    times: list[float] = []
    with _deadline(proc, timeout):
        for n, raw in enumerate(proc.stdout):
            cells = [_float_or_none(c) for c in raw.decode(errors="replace").strip().split(",")]
            t = next((c for c in cells if c is not None), None)  # pts_time, else best_effort_timestamp_time
            if t is not None:
                times.append(t)
            if n + 1 >= frames:
                break
    if not times:
        _log.warning("%s: stream %d starts mid-GOP and no frame's time could be read; audio is aligned to the "
                     "stream's start time instead (late by up to one GOP)", path, index)
        return None
    return min(times)


def _first_frame_time(path: str | Path, v: dict) -> float | None:
    """``VideoProbe.first_frame_time`` for the video stream ``v``: its start, unless it starts mid-GOP.

    Frames and audio share the time axis whose 0 is the first decoded frame. A cut MPEG-TS often starts mid-GOP:
    the decoder drops the frames before the first keyframe, so the first frame comes up to a GOP after the
    stream's start time, and audio aligned to the start time would be late by that much (0.72 s measured)."""
    start = _float_or_none(v.get("start_time"))
    index = v.get("index")
    if not isinstance(index, int) or _first_packet_is_key(path, index) is not False:
        return start
    first = _first_decoded_frame_time(path, index)
    if first is None or start is None:
        return start
    return max(start, first)


def _timestamps_only_container(probe: VideoProbe) -> bool:
    """MPEG-TS/PS: no stored duration, only what ffprobe estimates from the timestamps in the file."""
    return bool(set(str(probe.container or "").split(",")) & {"mpegts", "mpeg", "mpegvideo"})


def _declared_length(v: dict, container: str) -> float | None:
    """``VideoProbe.declared_length`` of the video stream ``v``."""
    if "avi" in container.split(","):
        # frames counted in the header's rate, whose tick is the time base (not r_frame_rate: H.264 copied into
        # AVI is written at twice the rate with filler ticks, 500 "frames" of 1/50 s for 250 real ones)
        nb, tb = v.get("nb_frames"), _rate(v.get("time_base"))
        if nb and str(nb).isdigit() and int(nb) > 0 and tb:
            return int(nb) * tb
    return _stream_seconds(v)


def not_a_file_reason(path: str | Path) -> str:
    """Why ``path`` (which is not a regular file) cannot be read, in words a user can act on."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return f"broken or looping symbolic link (-> {target})"
    return "file does not exist" if not p.exists() else "not a regular file"


def probe_video(path: str | Path) -> VideoProbe:
    """ffprobe ``path``; a missing, empty or unreadable file raises VideoError(stage='probe')."""
    p = Path(path)
    if not p.is_file():
        raise VideoError(str(path), "probe", not_a_file_reason(p))
    if p.stat().st_size == 0:
        raise VideoError(str(path), "probe", "file is empty (0 bytes)")
    cmd = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", ffmpeg_input(p)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VideoError(str(path), "probe", f"ffprobe failed to run: {e}") from e
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        raise VideoError(str(path), "probe", f"not a readable media file ({msg[-1] if msg else 'ffprobe error'})")
    info = json.loads(out.stdout or b"{}")
    streams = info.get("streams", [])
    # Cover art (attached_pic) is a one-frame "video" stream, not a video.
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    fmt = info.get("format", {})
    v = _pick_video_stream(video)
    a = audio[0] if audio else {}
    nb = v.get("nb_frames")
    # The stream's own length where it says (Matroska: its DURATION tag; the container's duration covers the
    # longest stream, e.g. 30 s of audio beside 3 s of video), else the container's.
    duration = _stream_seconds(v) or _container_video_length(fmt, _float_or_none(v.get("start_time")))
    return VideoProbe(
        path=str(path),
        has_video=bool(video),
        has_audio=bool(audio),
        width=v.get("width"),
        height=v.get("height"),
        avg_fps=_rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate")),
        nb_frames=int(nb) if nb and str(nb).isdigit() and int(nb) > 0 else None,
        duration=duration,
        stream_duration=_float_or_none(v.get("duration")),
        video_start=_float_or_none(v.get("start_time")),
        first_frame_time=_first_frame_time(path, v) if v else None,
        declared_length=_declared_length(v, str(fmt.get("format_name", ""))) if v else None,
        audio_start=_float_or_none(a.get("start_time")),
        audio_channels=int(a["channels"]) if str(a.get("channels", "")).isdigit() and int(a["channels"]) > 0 else None,
        audio_layout=str(a["channel_layout"]) if a.get("channel_layout") and a["channel_layout"] != "unknown" else None,
        rotation=_rotation(v) if v else 0,
        codec=v.get("codec_name"),
        pix_fmt=v.get("pix_fmt"),
        container=fmt.get("format_name"),
        video_index=int(v["index"]) if str(v.get("index", "")).isdigit() else None,
        video_streams=len(video),
    )


# --------------------------------------------------------------------------- resampling
def num_output_frames(end: float, fps: float) -> int:
    """Output frames ``k`` with ``k / fps < end`` (``end`` = stream length after the first frame)."""
    if not end > TIME_EPS:
        return 0
    return int(math.floor((end - TIME_EPS) * fps)) + 1


def sample_and_hold(pts: np.ndarray, end: float, fps: float) -> np.ndarray:
    """Source frame index for every output frame: latest ``pts <= k / fps`` (times from the first frame).

    ``pts`` are presentation times in seconds, increasing, ``pts[0] == 0``; ``end`` is when
    the last frame stops being shown. Returns int64 indices, one per output frame.
    """
    pts = np.asarray(pts, dtype=np.float64)
    n = num_output_frames(end, fps)
    t = np.arange(n, dtype=np.float64) / fps
    idx = np.searchsorted(pts, t + TIME_EPS, side="right") - 1
    return np.clip(idx, 0, len(pts) - 1).astype(np.int64)


class StreamingSampleAndHold:
    """:func:`sample_and_hold` for frames that arrive one at a time (the ffmpeg backend)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.next_k = 0
        self.prev = None  # (pts, frame)
        self.first_pts: float | None = None

    def push(self, pts: float, frame) -> Iterator[tuple[int, object]]:
        """Feed the next decoded frame; yield (k, frame) for outputs that are now decided."""
        if self.first_pts is None:
            self.first_pts = pts
        t = pts - self.first_pts
        if self.prev is not None:
            if t <= self.prev[0] + TIME_EPS * 0.01:  # non-increasing pts: keep the earlier frame
                return
            yield from self._emit_until(t)
        self.prev = (t, frame)

    def finish(self, end: float) -> Iterator[tuple[int, object]]:
        """Flush the last frame, shown until ``end`` (seconds after the first frame)."""
        if self.prev is not None:
            yield from self._emit_until(end)
            self.prev = None

    def _emit_until(self, t_next: float) -> Iterator[tuple[int, object]]:
        # Output k takes the held frame while k / fps is before the next frame's pts.
        while self.next_k / self.fps + TIME_EPS < t_next:
            yield self.next_k, self.prev[1]
            self.next_k += 1


# --------------------------------------------------------------------------- backends
def decord_is_consistent(pts_start: np.ndarray, pts_end: np.ndarray, probe: VideoProbe) -> str | None:
    """Why decord's reading of a file cannot be trusted, or None when it can.

    Checks that timestamps are finite and strictly increasing, that the frame count
    agrees with the container's (when it says), and that decord's duration agrees
    with ffprobe's; decord silently returns wrong times on some files.
    """
    n = len(pts_start)
    if n == 0:
        return "decord reports 0 frames"
    if not (np.all(np.isfinite(pts_start)) and np.all(np.isfinite(pts_end))):
        return "decord reports non-finite timestamps"
    if n > 1 and np.any(np.diff(pts_start) <= 0):
        return "decord timestamps are not strictly increasing"
    if pts_end[-1] <= pts_start[-1]:
        return "decord reports a non-positive duration for the last frame"
    if probe.nb_frames is not None and abs(probe.nb_frames - n) > 1:
        return f"decord reads {n} frames, the container says {probe.nb_frames}"
    length = float(pts_end[-1] - pts_start[0])
    if probe.duration is not None and abs(length - probe.duration) > max(0.5, 0.02 * probe.duration):
        return f"decord duration {length:.3f}s disagrees with ffprobe's {probe.duration:.3f}s"
    return None


class DecordFrames:
    """Resampled RGB frames via decord (timestamps up front, so only needed frames are converted)."""

    backend = "decord"

    def __init__(self, path: str, probe: VideoProbe, fps: float, num_threads: int = 0) -> None:
        import decord  # imported here: optional at import time of this module

        # decord's libav logs its errors to stderr without naming the file ("[h264 @ 0x...] Invalid NAL unit
        # size"), interleaved across worker threads; a failure here is raised as a DecodeError naming the file
        # instead (and the ffmpeg retry reports the decoder's own messages with it).
        decord.logging.set_level(decord.logging.QUIET)

        if probe.rotation:
            raise DecodeError(path, f"rotation metadata ({probe.rotation} deg) is ignored by decord", self.backend)
        if probe.video_streams > 1:  # decord decodes the stream it finds "best", which may not be the probed one
            raise DecodeError(path, f"{probe.video_streams} video streams: decord cannot be told which", self.backend)
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
            n = len(self._vr)
            ts = self._vr.get_frame_timestamp(range(n)) if n else np.zeros((0, 2))
        except Exception as e:  # decord raises DECORDError / RuntimeError subclasses
            raise DecodeError(path, f"cannot open: {_short(e)}", self.backend) from e
        ts = np.asarray(ts, dtype=np.float64).reshape(-1, 2)
        why = decord_is_consistent(ts[:, 0], ts[:, 1], probe)
        if why is not None:
            raise DecodeError(path, why, self.backend)
        self.path = path
        pts = ts[:, 0] - ts[0, 0]
        self.duration = float(ts[-1, 1] - ts[0, 0])
        self.source_index = sample_and_hold(pts, self.duration, fps)
        self.num_frames = len(self.source_index)
        h, w = self._vr[0].shape[:2] if n else (0, 0)
        self.width, self.height = int(w), int(h)
        self._vr.seek(0)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (output index, RGB uint8 (H, W, 3)); decoding runs in sorted chunks."""
        unique = np.unique(self.source_index)
        chunk = max(1, min(64, DECODE_CHUNK_BYTES // max(1, self.width * self.height * 3)))
        k = 0
        for c0 in range(0, len(unique), chunk):
            wanted = unique[c0 : c0 + chunk]
            try:
                batch = self._vr.get_batch(wanted.tolist()).asnumpy()
            except Exception as e:
                raise DecodeError(self.path, f"frame {int(wanted[0])}: {_short(e)}", self.backend) from e
            lookup = {int(s): i for i, s in enumerate(wanted)}
            while k < self.num_frames and int(self.source_index[k]) in lookup:
                yield k, batch[lookup[int(self.source_index[k])]]
                k += 1
        if k != self.num_frames:
            raise DecodeError(self.path, f"only {k} of {self.num_frames} frames decoded", self.backend)

    def close(self) -> None:
        self._vr = None


# Lines of ffmpeg's stderr that are not reasons (progress, statistics, showinfo's frame details); the line
# ffmpeg prints for each packet its decoder failed on, whose frame is dropped (ffmpeg <= 6: "Error while
# decoding stream #0:0: ...", 7: "[vist#0:0/h264 @ 0x...] Decoding error: ..."; anchored, so that no file name
# or tag can match); and a library's own message ("[h264 @ 0x...] Invalid NAL unit size"), for the reason.
_NOISE = re.compile(r"^(frame|size)=\s*\S+|^video:\S+ audio:|Parsed_showinfo"
                    # the input/output description at -loglevel info: headers and "key : value" metadata lines
                    r"|^(Input|Output) #\d|^(Metadata|Side data|Stream mapping|Chapters?):|^Duration: |^Stream #"
                    r"|^Press \[q\]|^[A-Za-z_][\w.-]*\s*: |^Guessed Channel Layout")
_DROPPED = re.compile(r"^Error while decoding stream #\d+:\d+|^\[[va]ist#\S+ @ 0x[0-9a-f]+\] Decoding error")
_LIBRARY = re.compile(r"^\[\w+ @ 0x[0-9a-f]+\] ")
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+|NOPTS)\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)")


def _video_map(probe: VideoProbe) -> str:
    """ffmpeg's -map for the stream the probe describes (by absolute index: "0:v:0" may be cover art)."""
    return f"0:{probe.video_index}" if probe.video_index is not None else "0:v:0"


class FfmpegFrames:
    """Resampled RGB frames from an ffmpeg subprocess (rawvideo on stdout, timestamps from showinfo)."""

    backend = "ffmpeg"

    def __init__(self, path: str, probe: VideoProbe, fps: float, threads: int = 0) -> None:
        self.path = path
        self.probe = probe
        self.fps = fps
        self.threads = threads
        self.num_frames: int | None = None  # known once the stream has been read
        self.duration: float | None = None
        self.width = probe.width or 0
        self.height = probe.height or 0
        self._proc: subprocess.Popen | None = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info", "-threads", str(self.threads),
            "-i", ffmpeg_input(self.path), "-map", _video_map(self.probe), "-an", "-sn", "-vf", "showinfo",
            "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]  # fmt: skip
        try:
            self._proc = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise DecodeError(self.path, f"cannot run ffmpeg: {e}", self.backend) from e
        infos: queue.Queue = queue.Queue()
        tail: list[str] = []
        details: list[str] = []  # the libraries' first messages (the reason of a failure)
        self._dropped = 0  # packets the decoder failed on (their frames are missing)

        def read_stderr() -> None:
            seen_frame = False  # errors before the first frame: the packets ahead of a mid-GOP start's keyframe
            for raw in proc.stderr:
                line = raw.decode(errors="replace")
                m = _SHOWINFO.search(line)
                if m and "Parsed_showinfo" in line:
                    seen_frame = True
                    infos.put((m.group(3), int(m.group(4)), int(m.group(5))))
                # (not progress, statistics or frame info; nor the indented lines of the input/output description:
                # metadata of any key, programs, chapters, streams)
                elif line.strip() and not line[:1].isspace() and not _NOISE.search(line.strip()):
                    tail.append(line.strip())
                    del tail[:-5]
                    if _DROPPED.match(line.strip()):
                        self._dropped += seen_frame  # (a lead-in of 10 s counted 224 "damaged" packets)
                    elif _LIBRARY.match(line.strip()) and len(details) < 3:
                        details.append(line.strip())
            infos.put(None)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        sah = StreamingSampleAndHold(self.fps)
        last_pts = None
        deltas: list[float] = []
        size: tuple[int, int] | None = None
        decoded = 0
        try:
            while True:
                item = infos.get()
                if item is None:
                    break
                pts_s, w, h = item
                # After a mid-stream resolution change ffmpeg still writes rawvideo at the first frame's size
                # (it inserts a scaler), while showinfo reports the new size: read at the first size.
                w, h = size = size or (w, h)
                data = proc.stdout.read(w * h * 3)
                if len(data) < w * h * 3:
                    break
                frame = np.frombuffer(data, np.uint8).reshape(h, w, 3)
                decoded += 1
                self.width, self.height = w, h
                pts = _float_or_none(pts_s)
                if pts is None:  # no timestamp: assume the nominal frame rate
                    pts = (last_pts + (1.0 / (self.probe.avg_fps or self.fps))) if last_pts is not None else 0.0
                if last_pts is not None and pts > last_pts:
                    deltas.append(pts - last_pts)
                last_pts = pts if last_pts is None else max(pts, last_pts)
                yield from sah.push(pts, frame)
            proc.wait()
            if sah.first_pts is None:
                raise DecodeError(self.path, f"no frame could be decoded ({'; '.join(tail[-2:]) or 'empty stream'})",
                                  self.backend)
            if proc.returncode != 0 and not deltas:
                raise DecodeError(self.path, f"ffmpeg exited with {proc.returncode}: {'; '.join(tail[-2:])}",
                                  self.backend)
            self.duration = self._stream_end(last_pts - sah.first_pts, sah.first_pts, deltas)
            self.duration = self._check_complete(self.duration, tail)
            reader.join(timeout=5)  # (stderr fully read: every dropped packet counted)
            self._check_undamaged(decoded, details)
            yield from sah.finish(self.duration)
            self.num_frames = sah.next_k
        finally:
            self.close()
            reader.join(timeout=5)

    def _check_complete(self, decoded: float, tail: list[str]) -> float:
        """A truncated or damaged file must fail, not be stored as a shorter video: compare the decoded length
        with what the video stream declares (``VideoProbe.declared_length``; the container's duration only
        without an audio stream, which may outlast the video), less an undecodable mid-GOP start. Returns the
        length to use: the decoded one, or, when the last frame is shown for longer than one frame period (a
        screen recording or slideshow ending on a still: its packet's duration says so; Matroska, which stores no
        such duration: read to the end with no message from ffmpeg), the end of that packet.
        MPEG-TS/PS declare nothing to check against (their duration is estimated from the timestamps in the
        file, which a truncated file ends early too and a joined recording's discontinuity makes absurd)."""
        p = self.probe
        if _timestamps_only_container(p):
            return decoded
        declared = p.declared_length
        if declared is None and not p.has_audio:
            declared = p.duration
        if declared is not None and p.first_frame_time is not None and p.video_start is not None:
            declared -= max(0.0, p.first_frame_time - p.video_start)
        if declared is None or decoded >= declared - max(1.0, 0.05 * declared):
            return decoded
        held = self._held_last_frame_end(declared)
        if held is not None and held > decoded and held >= declared - max(1.0, 0.05 * declared):
            return held
        if "matroska" in str(p.container or "").split(",") and not tail:
            # Matroska keeps no duration per frame (a held last frame looks like any other), but a truncated file
            # makes ffmpeg complain ("File ended prematurely"): read to its end without a word, the file is whole
            return declared
        raise DecodeError(self.path, f"decoded only {decoded:.2f} s of the {declared:.2f} s the video stream "
                          f"declares: truncated or damaged file ({'; '.join(tail[-2:]) or 'no ffmpeg error'})",
                          self.backend)

    def _held_last_frame_end(self, declared: float) -> float | None:
        """Where the video's last packet ends (its time plus its duration, seconds after the first frame), read
        with ffprobe from 10 s before the declared end; None if it cannot be read."""
        p = self.probe
        origin = p.first_frame_time if p.first_frame_time is not None else (p.video_start or 0.0)
        if p.video_index is None:
            return None
        packets = _probe_entries(self.path, str(p.video_index), f"{max(0.0, origin + declared - 10.0):.3f}%",
                                 "packets", "pts_time,duration_time")
        ends = [t + (_float_or_none(pk.get("duration_time")) or 0.0)
                for pk in packets if (t := _float_or_none(pk.get("pts_time"))) is not None]
        return max(ends) - origin if ends else None

    def _check_undamaged(self, decoded: int, details: list[str]) -> None:
        """Damaged data inside the file (not only at its end) must fail too: ffmpeg drops the frames whose
        packets its decoder fails on, and holding the previous frame over the hole would store a damaged
        video as a good one. Fails when more than ``max(2, 0.5%)`` of the packets failed, counted from ffmpeg's
        own per-packet error lines. Not counted: frames the decoder repaired in place (concealed blocks: the
        frame is there) and frames a container lists but ffmpeg does not output by design (an MP4 edit list's
        lead-in, the gaps of variable frame rate)."""
        dropped = self._dropped
        if dropped > max(2, 0.005 * (decoded + dropped)):
            first = f"; first: {details[0]}" if details else ""
            raise DecodeError(
                self.path,
                f"damaged data: {dropped} packets could not be decoded ({decoded} frames could{first}); repair or "
                "re-encode the file",
                self.backend)

    def _stream_end(self, rel_last: float, first_pts: float, deltas: list[float]) -> float:
        """When the last frame stops being shown (seconds after the first frame).

        showinfo gives no frame durations, so the container's stream duration is used when it
        is plausible (what decord reads from the same index); else one nominal frame period.
        """
        nominal = 1.0 / self.probe.avg_fps if self.probe.avg_fps else (float(np.median(deltas)) if deltas else 1 / self.fps)
        if self.probe.stream_duration is not None:
            end = (self.probe.video_start or first_pts) + self.probe.stream_duration - first_pts
            if 0 < end - rel_last <= 2 * nominal + TIME_EPS:
                return end
        return rel_last + nominal

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def open_frames(path: str | Path, probe: VideoProbe, fps: float, backend: str = "auto", threads: int = 0):
    """A resampled frame source: decord first (``auto``) and ffmpeg when decord refuses the file.

    Errors raised later while iterating a decord source are the caller's cue to retry with
    ``backend="ffmpeg"`` (the pipeline does this).
    """
    path = str(path)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"open_frames: fps must be a positive number of frames per second, got {fps!r}")
    if not probe.has_video:
        raise VideoError(path, "decode", "the file has no video stream")
    if backend not in ("auto", "decord", "ffmpeg"):
        raise ValueError(f"unknown decode backend {backend!r}")
    if backend == "decord" or (backend == "auto" and probe.decord_unsuitable() is None):
        try:
            return DecordFrames(path, probe, fps, num_threads=threads)
        except DecodeError:
            if backend == "decord":
                raise
    return FfmpegFrames(path, probe, fps, threads=threads)


# --------------------------------------------------------------------------- preprocessing
def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(H, W) with the short side ``short``; long side truncated like torchvision's Resize(int)."""
    if h <= w:
        return short, max(1, int(short * w / h))
    return max(1, int(short * h / w)), short


def resize_center_crop(frames: torch.Tensor, short: int, crop: int, mode: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, crop, crop): antialiased resize of the short side, centre crop.

    Antialiasing matches PIL (what open_clip's transform uses), so large sources do not alias.
    """
    n, _, h, w = frames.shape
    nh, nw = resized_size(h, w, short)
    if (nh, nw) != (h, w):
        x = frames.contiguous(memory_format=torch.channels_last)  # uint8 fast path of interpolate
        frames = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    # torchvision CenterCrop offsets; if the crop is larger than the image, it is zero-padded.
    if nh < crop or nw < crop:
        ph, pw = max(0, crop - nh), max(0, crop - nw)
        frames = F.pad(frames, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        nh, nw = frames.shape[-2:]
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return frames[:, :, top : top + crop, left : left + crop].contiguous()


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, H, W) in [0, 255]: ITU-R BT.601 luma (OpenCV's weights).

    Not rounded to 8 bits as ``cv2.cvtColor`` would (docs/tvl1.md, "Grey input").
    """
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
    return rgb.float() @ w


@dataclass(frozen=True)
class PreprocessSpec:
    """Which per-frame outputs to make and at which sizes."""

    resize_short: int = 256
    crop_size: int = 224
    want_rgb: bool = True
    want_gray: bool = True
    clip_size: int = 224
    want_clip: bool = True


class FramePreprocessor:
    """Batches native frames and emits the I3D crop, its grayscale and (selected frames) the CLIP crop."""

    def __init__(self, spec: PreprocessSpec, clip_frame: Callable[[int], bool]) -> None:
        self.spec = spec
        self.clip_frame = clip_frame

    def __call__(self, ks: list[int], frames: list[np.ndarray]) -> dict[str, object]:
        """Frames of one native size -> {'rgb': uint8 (n,c,c,3), 'gray': float32 (n,c,c), 'clip': {k: uint8 (3,S,S)}}."""
        s = self.spec
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (n, 3, H, W) uint8 view
        out: dict[str, object] = {"k": ks}
        if s.want_rgb or s.want_gray:
            crop = resize_center_crop(x, s.resize_short, s.crop_size, "bilinear").permute(0, 2, 3, 1).contiguous()
            if s.want_rgb:
                out["rgb"] = crop.numpy()
            if s.want_gray:
                out["gray"] = rgb_to_gray(crop).numpy()
        if s.want_clip:
            sel = [i for i, k in enumerate(ks) if self.clip_frame(k)]
            if sel:
                c = resize_center_crop(x[sel], s.clip_size, s.clip_size, "bicubic")
                out["clip"] = {ks[i]: c[j].numpy() for j, i in enumerate(sel)}
        return out


def iter_preprocessed(
    source, pre: FramePreprocessor, batch: int = 16, stop: threading.Event | None = None
) -> Iterator[dict[str, object]]:
    """Group a frame source into batches of equal native size and preprocess each batch."""
    ks: list[int] = []
    frames: list[np.ndarray] = []
    for k, frame in source:
        if stop is not None and stop.is_set():
            return
        if frames and frame.shape != frames[0].shape:  # resolution change mid-stream
            yield pre(ks, frames)
            ks, frames = [], []
        ks.append(k)
        frames.append(frame)
        if len(frames) >= batch:
            yield pre(ks, frames)
            ks, frames = [], []
    if frames:
        yield pre(ks, frames)


# --------------------------------------------------------------------------- audio
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
        with _deadline(proc, timeout) as timed_out:
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
    for f in _probe_entries(path, "a:0", "%+#50", "frames", "pts_time,best_effort_timestamp_time"):
        t = _float_or_none(f.get("pts_time"))
        t = t if t is not None else _float_or_none(f.get("best_effort_timestamp_time"))
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
    dropped = sum(1 for ln in lines if _DROPPED.match(ln))
    if dropped > max(2, 0.005 * seconds * AUDIO_PACKETS_PER_SECOND):
        first = next((ln for ln in lines if _LIBRARY.match(ln)), None)
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
