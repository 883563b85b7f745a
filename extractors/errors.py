"""Errors of the per-video extraction pipeline.

Every failure that concerns one video is a :class:`VideoError` naming the file, the
stage that failed (``probe``, ``decode``, ``audio``, ``i3d_rgb``, ``store`` ...) and a
human-readable reason, so a batch run can report it and carry on with the next video.
"""
from __future__ import annotations


class StageError(RuntimeError):
    """A video's extraction failed at a stage; ``str(e)`` reads ``<file>: <stage>: <reason><note>``."""

    def __init__(self, video: str, stage: str, reason: str, note: str = "") -> None:
        self.video = str(video)
        self.stage = stage
        self.reason = reason
        super().__init__(f"{self.video}: {stage}: {reason}{note}")

    def __reduce__(self):  # keep the three fields through pickling (process pools, Prefect)
        return (type(self), (self.video, self.stage, self.reason))


class VideoError(StageError):
    """One video could not be processed, through its own fault (the file); ``str(e)`` reads
    ``<file>: <stage>: <reason>``."""


class DecodeError(VideoError):
    """The video stream could not be decoded (by the backend that raised it)."""

    def __init__(self, video: str, reason: str, backend: str | None = None) -> None:
        self.backend = backend
        super().__init__(video, "decode" if backend is None else f"decode[{backend}]", reason)

    def __reduce__(self):
        return (type(self), (self.video, self.reason, self.backend))


class ResourceError(StageError):
    """The machine failed a video's extraction, not the video: the store's disk full or read-only, no
    permission to write it, out of GPU memory, a GPU fault. Not a :class:`VideoError`: the run stops (or its
    task is retried) and the video is not remembered as bad; ``str(e)`` reads ``<file>: <stage>: <reason>``."""

    def __init__(self, video: str, stage: str, reason: str) -> None:
        super().__init__(video, stage, reason, " (a problem of this machine, not of the video: nothing of the "
                         "video was stored; fix it and run again)")


class ExtractionCancelled(BaseException):
    """Raised inside a video's extraction when its run is cancelled (``extract_many`` after Ctrl-C, or after
    an error that is not one video's). A BaseException, as KeyboardInterrupt is, so that no handler turns it
    into that video's failure; the video publishes nothing."""


class ConfigError(ValueError):
    """An extraction setting is invalid (not tied to one video)."""
