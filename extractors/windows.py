"""Bounded-memory streaming of preprocessed frames as windows of whole snippets.

The decoder produces frames in order; :class:`SnippetWindower` collects them until a
window of ``window_snippets`` snippets (plus one frame of overlap, the successor TV-L1
needs for the window's last frame) is complete, hands it out, and drops every frame no
later snippet needs. :class:`BackgroundIterator` runs that producer in a thread with a
bounded queue so decoding overlaps the networks.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from storage import SnippetGrid


@dataclass
class FrameWindow:
    """Frames for snippets ``[first_snippet, first_snippet + num_snippets)``.

    ``rgb``/``gray`` hold output frames ``start_frame ...`` (``(n, c, c, 3)`` uint8 /
    ``(n, c, c)`` float32); ``n`` includes the successor frame when the video has one.
    ``clip`` is ``(num_snippets, k, 3, S, S)`` uint8.
    """

    first_snippet: int
    num_snippets: int
    start_frame: int
    rgb: np.ndarray | None = None
    gray: np.ndarray | None = None
    clip: np.ndarray | None = None

    def snippet_offsets(self, grid: SnippetGrid) -> list[int]:
        """Index into ``rgb``/``gray`` of each snippet's first frame."""
        return [grid.snippet_start_frame(self.first_snippet + j) - self.start_frame for j in range(self.num_snippets)]


@dataclass
class StreamEnd:
    """Sent after the last window: what the whole stream turned out to be."""

    num_frames: int
    num_snippets: int
    backend: str
    duration: float | None
    width: int
    height: int
    extra: dict = field(default_factory=dict)


class SnippetWindower:
    """Turns preprocessed frame batches (see preprocess.FramePreprocessor) into FrameWindows."""

    def __init__(self, grid: SnippetGrid, window_snippets: int, clip_positions: list[int] | None,
                 want_rgb: bool, want_gray: bool) -> None:
        self.grid = grid
        self.w = window_snippets
        self.clip_positions = clip_positions
        self.want_rgb = want_rgb
        self.want_gray = want_gray
        self.next_snippet = 0
        self.base = 0  # output index of rgb[0]
        self.rgb: list[np.ndarray] = []
        self.gray: list[np.ndarray] = []
        self.clip: dict[int, np.ndarray] = {}
        self.seen = 0  # output frames received

    def _frames_needed(self, first: int, count: int) -> int:
        """One past the last output frame used by snippets [first, first+count), plus the flow successor."""
        return self.grid.snippet_start_frame(first + count - 1) + self.grid.snippet_frames + 1

    def push(self, batch: dict) -> Iterator[FrameWindow]:
        ks = batch["k"]
        if ks and ks[0] != self.seen:
            raise RuntimeError(f"frames out of order: expected {self.seen}, got {ks[0]}")
        if self.want_rgb:
            self.rgb.extend(batch["rgb"])
        if self.want_gray:
            self.gray.extend(batch["gray"])
        self.clip.update(batch.get("clip", {}))
        self.seen += len(ks)
        while self.seen >= self._frames_needed(self.next_snippet, self.w):
            yield self._emit(self.w)

    def finish(self) -> Iterator[FrameWindow]:
        total = self.grid.num_snippets(self.seen)
        while self.next_snippet < total:
            yield self._emit(min(self.w, total - self.next_snippet))

    def _emit(self, count: int) -> FrameWindow:
        first = self.next_snippet
        start = self.grid.snippet_start_frame(first)
        end = min(self.seen, self._frames_needed(first, count))
        a, b = start - self.base, end - self.base
        win = FrameWindow(first, count, start)
        if self.want_rgb:
            win.rgb = np.stack(self.rgb[a:b])
        if self.want_gray:
            win.gray = np.stack(self.gray[a:b])
        if self.clip_positions is not None:
            win.clip = np.stack([
                np.stack([self.clip[self.grid.snippet_start_frame(i) + p] for p in self.clip_positions])
                for i in range(first, first + count)
            ])
        self.next_snippet = first + count
        # Drop everything before the next snippet's first frame.
        keep_from = self.grid.snippet_start_frame(self.next_snippet)
        drop = max(0, keep_from - self.base)
        del self.rgb[:drop]
        del self.gray[:drop]
        self.base += drop
        for k in [k for k in self.clip if k < keep_from]:
            del self.clip[k]
        return win


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackgroundIterator:
    """Run ``produce(stop_event)`` (a generator) in a daemon thread; iterate its items here.

    At most ``maxsize`` items wait in the queue, so a fast producer cannot run ahead and
    fill memory. An exception in the producer is re-raised in the consumer. Closing (or
    leaving a ``with`` block) stops the producer at its next item.
    """

    def __init__(self, produce: Callable[[threading.Event], Iterator], maxsize: int = 2) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="clipae-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce) -> None:
        gen = produce(self._stop)
        try:
            for item in gen:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer
            self._put(_Failure(e))
        finally:
            gen.close()  # runs the producer's cleanup (e.g. kills an ffmpeg subprocess) now

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=30)

    def __enter__(self) -> "BackgroundIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
