"""What a video file holds, by ffprobe: :func:`probe_video` -> :class:`VideoProbe` (streams, rates, start
times, declared lengths, rotation, the first decodable frame), and the ffmpeg/ffprobe process helpers that
the frame decoder (extractors/decode.py) and the audio decoder (extractors/audio_decode.py) share: how a
path is passed, a deadline per process, the patterns of ffmpeg's error lines.

docs/extraction.md explains the choices.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from extractors.errors import VideoError

_log = logging.getLogger(__name__)


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


def float_or_none(v) -> float | None:
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
        length = end - max(0.0, float_or_none(stream.get("start_time")) or 0.0)
        if length > 0:
            return length
    return float_or_none(stream.get("duration"))


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
    duration, start = float_or_none(fmt.get("duration")), float_or_none(fmt.get("start_time"))
    if duration is None:
        return None
    if "matroska" in str(fmt.get("format_name", "")).split(","):
        duration -= max(0.0, video_start or 0.0)
    elif start is not None and video_start is not None:
        duration -= max(0.0, video_start - start)
    return duration if duration > 0 else None


def probe_entries(path, stream: str, interval: str, section: str, fields: str) -> list[dict]:
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
    packets = probe_entries(path, str(index), "%+#1", "packets", "flags")
    return ("K" in str(packets[0].get("flags", ""))) if packets else None


#: Packets read to find the first decodable frame of a stream that starts mid-GOP: a 60 s GOP at 50 fps (the
#: read stops once 16 frames are out).
MID_GOP_PACKETS = 3000


@contextlib.contextmanager
def process_deadline(proc: subprocess.Popen, seconds: float):
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
    with process_deadline(proc, timeout):
        for n, raw in enumerate(proc.stdout):
            cells = [float_or_none(c) for c in raw.decode(errors="replace").strip().split(",")]
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
    start = float_or_none(v.get("start_time"))
    index = v.get("index")
    if not isinstance(index, int) or _first_packet_is_key(path, index) is not False:
        return start
    first = _first_decoded_frame_time(path, index)
    if first is None or start is None:
        return start
    return max(start, first)


def timestamps_only_container(probe: VideoProbe) -> bool:
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
    duration = _stream_seconds(v) or _container_video_length(fmt, float_or_none(v.get("start_time")))
    return VideoProbe(
        path=str(path),
        has_video=bool(video),
        has_audio=bool(audio),
        width=v.get("width"),
        height=v.get("height"),
        avg_fps=_rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate")),
        nb_frames=int(nb) if nb and str(nb).isdigit() and int(nb) > 0 else None,
        duration=duration,
        stream_duration=float_or_none(v.get("duration")),
        video_start=float_or_none(v.get("start_time")),
        first_frame_time=_first_frame_time(path, v) if v else None,
        declared_length=_declared_length(v, str(fmt.get("format_name", ""))) if v else None,
        audio_start=float_or_none(a.get("start_time")),
        audio_channels=int(a["channels"]) if str(a.get("channels", "")).isdigit() and int(a["channels"]) > 0 else None,
        audio_layout=str(a["channel_layout"]) if a.get("channel_layout") and a["channel_layout"] != "unknown" else None,
        rotation=_rotation(v) if v else 0,
        codec=v.get("codec_name"),
        pix_fmt=v.get("pix_fmt"),
        container=fmt.get("format_name"),
        video_index=int(v["index"]) if str(v.get("index", "")).isdigit() else None,
        video_streams=len(video),
    )


# Lines of ffmpeg's stderr that are not reasons (progress, statistics, showinfo's frame details); the line
# ffmpeg prints for each packet its decoder failed on, whose frame is dropped (ffmpeg <= 6: "Error while
# decoding stream #0:0: ...", 7: "[vist#0:0/h264 @ 0x...] Decoding error: ..."; anchored, so that no file name
# or tag can match); and a library's own message ("[h264 @ 0x...] Invalid NAL unit size"), for the reason.
FFMPEG_NOISE = re.compile(r"^(frame|size)=\s*\S+|^video:\S+ audio:|Parsed_showinfo"
                          # the input/output description at -loglevel info: headers and "key : value" metadata lines
                          r"|^(Input|Output) #\d|^(Metadata|Side data|Stream mapping|Chapters?):|^Duration: |^Stream #"
                          r"|^Press \[q\]|^[A-Za-z_][\w.-]*\s*: |^Guessed Channel Layout")
FFMPEG_PACKET_FAILED = re.compile(
    r"^Error while decoding stream #\d+:\d+|^\[[va]ist#\S+ @ 0x[0-9a-f]+\] Decoding error")
FFMPEG_LIBRARY_MESSAGE = re.compile(r"^\[\w+ @ 0x[0-9a-f]+\] ")
