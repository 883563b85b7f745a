"""The snippet grid shared by every feature of a store."""
from __future__ import annotations

import math

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SnippetGrid:
    """Frames are resampled to ``fps``; snippet ``i`` covers frames ``[i*stride, i*stride + snippet_frames)``.

    The THUMOS'14 convention (I3D, 25 fps, 16-frame non-overlapping snippets) is the default.
    """

    fps: float = 25.0
    snippet_frames: int = 16
    stride: int = 16

    def __post_init__(self) -> None:
        if not (0 < self.fps < math.inf and self.snippet_frames > 0 and self.stride > 0):
            raise ValueError(f"invalid snippet grid {self!r}: fps, snippet_frames and stride must be positive"
                             " (and fps finite)")

    def num_snippets(self, num_frames: int) -> int:
        """Number of whole snippets in ``num_frames`` resampled frames (0 when shorter than one snippet)."""
        if num_frames < self.snippet_frames:
            return 0
        return (num_frames - self.snippet_frames) // self.stride + 1

    def snippet_start_frame(self, i: int) -> int:
        return i * self.stride

    @property
    def snippet_seconds(self) -> float:
        """Time between consecutive snippet starts, the unit that converts snippet indices to seconds."""
        return self.stride / self.fps

    def snippet_start_seconds(self, i: int) -> float:
        return i * self.stride / self.fps

    def snippet_center_seconds(self, i: int) -> float:
        return (i * self.stride + self.snippet_frames / 2.0) / self.fps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SnippetGrid":
        return cls(fps=float(d["fps"]), snippet_frames=int(d["snippet_frames"]), stride=int(d["stride"]))
