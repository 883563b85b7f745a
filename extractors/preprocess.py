"""Decoded frames -> network inputs: :class:`FramePreprocessor` turns native frames into the I3D crop (short
side ``resize_short`` bilinear, centre crop ``crop_size``), its grayscale (TV-L1 input) and, only for the
frames CLIP samples, the CLIP crop (short side 224 bicubic, centre crop 224, as open_clip's eval transform).
Native frames are dropped right away, so memory depends on the window size, never on the video length or
resolution. :func:`iter_preprocessed` does this over a frame source (extractors/decode.py) in batches.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F


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
