"""Video frames for feature extraction.

* :func:`open_frames` streams RGB frames resampled to the store's frame rate, with
  decord first and ffmpeg as the fallback (see :func:`decord_is_consistent` for when
  decord's reading is not trusted).
* :func:`sample_and_hold` is the resampling rule shared by both backends: output frame
  ``k`` (time ``t_k = k / fps`` after the first frame) shows the source frame with the
  latest presentation timestamp at or before ``t_k`` -- the frame a player displays at
  that instant. It handles variable frame rate exactly and never looks ahead in time.

What a file holds comes from extractors/probe.py (:func:`~extractors.probe.probe_video`), the crops the
networks take from extractors/preprocess.py, the audio track from extractors/audio_decode.py.
docs/extraction.md explains the choices.
"""
from __future__ import annotations

import math
import numbers
import queue
import re
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from extractors.errors import DecodeError, VideoError
from extractors.probe import (
    FFMPEG_LIBRARY_MESSAGE,
    FFMPEG_NOISE,
    FFMPEG_PACKET_FAILED,
    VideoProbe,
    ffmpeg_input,
    float_or_none,
    probe_entries,
    timestamps_only_container,
)

#: Timestamps closer than this (seconds) count as equal: decord reports float32 times.
TIME_EPS = 1e-4
#: Upper bound on native-resolution frames held at once by the decord backend (bytes).
DECODE_CHUNK_BYTES = 64 * 1024 * 1024
# The resampling rule's name, part of every feature's preprocess hash, is extractors.config.RESAMPLING_RULE:
# rename it there when the rule below changes.


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


# showinfo's line for each frame the ffmpeg backend reads: its index, timestamp and size.
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
                elif line.strip() and not line[:1].isspace() and not FFMPEG_NOISE.search(line.strip()):
                    tail.append(line.strip())
                    del tail[:-5]
                    if FFMPEG_PACKET_FAILED.match(line.strip()):
                        self._dropped += seen_frame  # (a lead-in of 10 s counted 224 "damaged" packets)
                    elif FFMPEG_LIBRARY_MESSAGE.match(line.strip()) and len(details) < 3:
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
                pts = float_or_none(pts_s)
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
        if timestamps_only_container(p):
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
        packets = probe_entries(self.path, str(p.video_index), f"{max(0.0, origin + declared - 10.0):.3f}%",
                                 "packets", "pts_time,duration_time")
        ends = [t + (float_or_none(pk.get("duration_time")) or 0.0)
                for pk in packets if (t := float_or_none(pk.get("pts_time"))) is not None]
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
