"""What a store holds: feature names and sizes, per-video metadata, provenance, and input validation."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

#: The standard features and their dimensions. Stores may declare extra features at creation.
FEATURE_DIMS: dict[str, int] = {"i3d_rgb": 1024, "i3d_flow": 1024, "clip_vitb16": 512, "vggish": 128}
#: Per-snippet boolean array written with ``vggish``: False where the video has no audio.
AUDIO_MASK = "audio_mask"

_UNSAFE_ID = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_INVISIBLE_ID = re.compile("[\ufeff\u202a-\u202e\u2066-\u2069]")


class StoreError(ValueError):
    """Bad input or a broken store. The message always names the video (or store) and the problem."""


def validate_video_id(video_id: str) -> str:
    """Video ids become directory names: reject anything that is not a safe single path component."""
    if not isinstance(video_id, str) or not video_id.strip():
        raise StoreError(f"video id {video_id!r}: empty; ids must be non-empty strings")
    if video_id in (".", "..") or ".." in video_id:
        raise StoreError(f"video id {video_id!r}: contains '..'; ids must be a single safe path component")
    if _UNSAFE_ID.search(video_id):
        raise StoreError(
            f"video id {video_id!r}: contains a path separator or control/reserved character "
            "(one of / \\ : * ? \" < > | or a control character)"
        )
    # A leading '_' or '-' is allowed: YouTube ids start with them (265 of ActivityNet v1.2's, e.g. '_-JNaelSKO8');
    # video groups live under videos/, apart from the store's own _staging.
    if _INVISIBLE_ID.search(video_id):  # (a byte-order mark from a manifest, or text-direction overrides: an id
        # part nobody sees; the zero-width (non-)joiners of ordinary Persian or Indic words are fine)
        raise StoreError(f"video id {video_id!r}: contains a byte-order mark or a text-direction control character")
    if video_id == "zarr.json":  # (the videos/ group's own metadata file)
        raise StoreError(f"video id {video_id!r}: the name of Zarr's metadata file; give the video another id")
    if video_id.startswith(".") or video_id != video_id.strip():
        raise StoreError(f"video id {video_id!r}: must not start with '.' or have surrounding spaces")
    try:
        encoded = video_id.encode()
    except UnicodeEncodeError:  # e.g. a file name that is not valid UTF-8 (Python keeps its bytes as surrogates)
        raise StoreError(f"video id {video_id!r}: not valid UTF-8 (from a file name in another encoding?); "
                         "give it an id in a manifest") from None
    if len(encoded) > 200:
        raise StoreError(f"video id {video_id[:40]!r}...: longer than 200 bytes")
    return video_id


def folded_video_id(video_id: str) -> str:
    """The id as case-insensitive, normalising file systems see it (macOS, Windows): two ids with one folded form
    ("Clip"/"clip", NFC/NFD "café") are one directory there."""
    return unicodedata.normalize("NFC", video_id).casefold()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class VideoInfo:
    """Where a video's features came from and its timing. ``source_fingerprint`` detects changed sources."""

    source: str
    source_fingerprint: str
    fps: float
    num_frames: int
    duration: float
    has_audio: bool | None = None
    width: int | None = None
    height: int | None = None
    source_fps: float | None = None  # the file's own average frame rate (``fps`` is the grid's, frames resampled to it)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoInfo":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class FeatureProvenance:
    """How one feature of one video was made. ``random_init`` marks features from untrained networks."""

    extractor: str
    extractor_version: str
    weights_sha256: str | None
    random_init: bool
    preprocess_hash: str
    created: str = field(default_factory=utc_now)
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureProvenance":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def same_config(self, other: "FeatureProvenance") -> bool:
        """Two features were made the same way (time and free-form params aside)."""
        return self.config_key() == other.config_key()

    def config_key(self) -> str:
        """What ``same_config`` compares, as one readable string (equal strings: same way of making it)."""
        weights = "random-init" if self.random_init else f"weights sha256 {self.weights_sha256 or 'none'}"
        return f"{self.extractor} {self.extractor_version}, {weights}, preprocess {self.preprocess_hash}"


def validate_features(
    video_id: str,
    features: dict[str, np.ndarray],
    dims: dict[str, int],
    expected_t: int | None,
) -> dict[str, np.ndarray]:
    """Check names, shapes, dtypes and values; return C-contiguous float32 (bool for the audio mask) arrays."""
    if not features:
        raise StoreError(f"video {video_id!r}: no features given")
    out: dict[str, np.ndarray] = {}
    t_seen: dict[str, int] = {}
    for name, arr in features.items():
        arr = np.asarray(arr)
        if name == AUDIO_MASK:
            if arr.ndim != 1:
                raise StoreError(f"video {video_id!r}: {AUDIO_MASK} must be 1-D (T,), got shape {arr.shape}")
            out[name] = np.ascontiguousarray(arr.astype(bool))
            t_seen[name] = arr.shape[0]
            continue
        if name not in dims:
            raise StoreError(
                f"video {video_id!r}: unknown feature {name!r}; this store holds {sorted(dims)} (+ {AUDIO_MASK})"
            )
        if arr.ndim != 2:
            raise StoreError(f"video {video_id!r}: feature {name!r} must be 2-D (T, D), got shape {arr.shape}")
        if arr.shape[1] != dims[name]:
            raise StoreError(
                f"video {video_id!r}: feature {name!r} has dimension {arr.shape[1]}, expected {dims[name]}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise StoreError(f"video {video_id!r}: feature {name!r} has dtype {arr.dtype}, expected a float type")
        with np.errstate(over="ignore"):  # (values beyond float32's range become inf: reported below)
            arr32 = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr32).all():
            bad = np.argwhere(~np.isfinite(arr32))[0]
            what = "NaN/Inf" if not np.isfinite(arr[tuple(bad)]) else "a value beyond float32's range"
            raise StoreError(
                f"video {video_id!r}: feature {name!r} contains {what} (first at snippet {bad[0]}, dim {bad[1]})"
            )
        out[name] = arr32
        t_seen[name] = arr.shape[0]
    ts = set(t_seen.values())
    if expected_t is not None:
        ts.add(expected_t)
    if len(ts) != 1:
        detail = ", ".join(f"{k}: T={v}" for k, v in sorted(t_seen.items()))
        if expected_t is not None:
            detail += f"; already stored: T={expected_t}"
        raise StoreError(f"video {video_id!r}: features disagree on the number of snippets T ({detail})")
    (t,) = ts
    if t == 0:
        raise StoreError(f"video {video_id!r}: zero snippets (T=0); the video is shorter than one snippet")
    return out
