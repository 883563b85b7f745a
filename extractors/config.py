"""Typed settings of feature extraction (``clipae extract``, the Prefect extraction flow).

Everything that changes feature values goes into the per-feature preprocess hash
(:func:`preprocess_params`), which the store records in each feature's provenance; the
pipeline re-extracts a feature when the hash (or weights, or extractor version) differs.
Settings that change only speed, or values only within float rounding (batch sizes, threads,
queue depth, device, decode and TV-L1 backends, TV-L1 compile/check_every), do not; nor does
``precision``, whose reduced-precision choice is gated on cosine >= 0.999 against fp32 per run and
recorded in provenance instead.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from clipae.fields import check_fields
from extractors.clip_config import CLIP_EXTRACTOR_VERSION, ClipConfig, clip_sample_positions
from extractors.errors import ConfigError
from extractors.tvl1_config import I3D_FLOW_BOUND, TVL1Config

#: Name of decode's resampling rule (extractors/decode.py), part of every feature's preprocess hash.
RESAMPLING_RULE = "sample_and_hold_at_or_before_v1"

ALL_FEATURES: tuple[str, ...] = ("i3d_rgb", "i3d_flow", "clip_vitb16", "vggish")

#: Bump an entry when a code change alters that feature's values.
EXTRACTOR_VERSIONS: dict[str, str] = {
    "i3d_rgb": "i3d_rgb/1",
    "i3d_flow": "i3d_flow_tvl1/1",
    "clip_vitb16": CLIP_EXTRACTOR_VERSION,
    "vggish": "vggish/1",
}

#: Weights keys of extractors/weights.py used by each feature.
WEIGHTS_KEYS: dict[str, str] = {
    "i3d_rgb": "i3d_rgb",
    "i3d_flow": "i3d_flow",
    "clip_vitb16": "clip_vitb16",
    "vggish": "vggish",
}

PRECISIONS = ("fp32", "auto", "bf16", "fp16")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract features. Defaults reproduce the standard THUMOS'14 features.

    fps/snippet_frames/stride must equal the store's snippet grid (checked per store).
    ``precision``: ``fp32`` everywhere; ``auto`` (default) tries bf16 autocast on CUDA and keeps
    it for a feature only if its first batch stays within cosine >= ``autocast_min_cosine``
    of fp32 (CPU is always fp32); ``bf16``/``fp16`` force autocast on CUDA.
    """

    features: tuple[str, ...] = ALL_FEATURES
    fps: float = 25.0
    snippet_frames: int = 16
    stride: int = 16
    # I3D / flow frames: short side resized (bilinear, antialiased), centre crop.
    resize_short: int = 256
    crop_size: int = 224
    tvl1: TVL1Config = field(default_factory=TVL1Config)
    flow_bound: float = I3D_FLOW_BOUND
    clip: ClipConfig = field(default_factory=ClipConfig)
    audio_sample_rate: int = 16000
    vggish_final_relu: bool = False
    vggish_postprocess: bool = False  # PCA + 8-bit quantisation (needs the vggish_pca file)
    # Weights / device / speed (not part of the preprocess hash).
    weights_dir: str | None = None
    allow_random_weights: bool = False
    random_seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    autocast_min_cosine: float = 0.999
    batch_size: int = 8  # snippets per network forward pass
    flow_batch_pairs: int = 32  # frame pairs per TV-L1 call
    window_snippets: int = 16  # snippets decoded per window (bounded memory)
    queue_windows: int = 2  # decoded windows waiting for the networks
    video_workers: int = 1  # videos decoded concurrently by extract_many (the networks still run one at a time)
    decode_backend: str = "auto"  # auto (decord, then ffmpeg) | decord | ffmpeg
    decode_threads: int = 0  # decoder threads (0: the library's choice)
    torch_threads: int | None = None  # None: leave torch's setting alone

    def __post_init__(self) -> None:
        try:  # (a YAML `allow_random_weights: "no"` is a string, hence true: types first, then values)
            check_fields(self, "")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        feats = tuple(self.features)
        unknown = [f for f in feats if f not in ALL_FEATURES]
        if unknown or not feats:
            raise ConfigError(f"unknown or no features {list(feats)}; choose from {list(ALL_FEATURES)}")
        object.__setattr__(self, "features", tuple(f for f in ALL_FEATURES if f in feats))
        if not self.fps > 0 or self.snippet_frames < 1 or self.stride < 1:
            raise ConfigError(f"invalid snippet grid fps={self.fps} frames={self.snippet_frames} stride={self.stride}")
        if self.crop_size < 16 or self.resize_short < 1:
            raise ConfigError(f"crop_size must be >= 16 and resize_short >= 1, got {self.crop_size}, {self.resize_short}")
        clip_sample_positions(self.snippet_frames, self.clip.frames_per_snippet)  # validates k
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.decode_backend not in ("auto", "decord", "ffmpeg"):
            raise ConfigError(f"decode_backend must be auto, decord or ffmpeg, got {self.decode_backend!r}")
        if not _DEVICE_RE.fullmatch(str(self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("batch_size", "flow_batch_pairs", "window_snippets", "queue_windows", "video_workers",
                     "audio_sample_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.torch_threads is not None and self.torch_threads < 1 or self.decode_threads < 0:
            raise ConfigError(f"torch_threads must be >= 1 (or unset) and decode_threads >= 0, got "
                              f"{self.torch_threads}, {self.decode_threads}")
        if not (0 < self.autocast_min_cosine <= 1 and self.flow_bound > 0):
            raise ConfigError(f"autocast_min_cosine must be in (0, 1] and flow_bound > 0, got "
                              f"{self.autocast_min_cosine}, {self.flow_bound}")

    def with_(self, **changes) -> "ExtractConfig":
        return replace(self, **changes)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available")
        if self.device.startswith("cuda:") and int(self.device[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"device {self.device!r} requested but only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible (CUDA_VISIBLE_DEVICES renumbers them from 0)")
        return self.device

    def weights_dir_path(self) -> Path | None:
        return Path(self.weights_dir).expanduser() if self.weights_dir else None


def _tvl1_params(tvl1) -> dict:
    # Speed-only settings leave the hash alone: check_every and compile do not change the result,
    # and the backend only within float rounding (it is recorded in provenance params instead).
    # check_every/compile are blanked to their default None, not dropped, so existing hashes stay valid.
    params = asdict(tvl1) | {"check_every": None, "compile": None}
    params.pop("backend", None)
    if params.get("state_dtype") == "float32":  # (added later: the default leaves existing hashes valid)
        params.pop("state_dtype")
    return params


def preprocess_params(config: ExtractConfig, feature: str) -> dict:
    """Every setting that determines ``feature``'s values (besides weights and code version)."""
    grid = {"fps": float(config.fps), "snippet_frames": config.snippet_frames, "stride": config.stride,
            "resampling": RESAMPLING_RULE}
    if feature == "i3d_rgb":
        return {**grid, "resize_short": config.resize_short, "resize": "bilinear_antialias",
                "crop": config.crop_size, "input": "rgb/127.5-1", "pool": "mixed_5c_mean"}
    if feature == "i3d_flow":
        return {**grid, "resize_short": config.resize_short, "resize": "bilinear_antialias",
                "crop": config.crop_size, "gray": "bt601", "tvl1": _tvl1_params(config.tvl1),
                "flow_bound": config.flow_bound, "pairs": "t->t+1, zero after last frame", "pool": "mixed_5c_mean"}
    if feature == "clip_vitb16":
        c = config.clip
        return {**grid, "model": c.model_name, "quick_gelu": c.quick_gelu,
                "positions": clip_sample_positions(config.snippet_frames, c.frames_per_snippet),
                "transform": "open_clip_eval(short=image_size bicubic, center_crop)",
                "pool": "mean_l2norm_renorm"}
    if feature == "vggish":
        return {**grid, "sample_rate": config.audio_sample_rate, "mono": "mean of channels",
                "resampler": "swr kaiser_best", "gaps": "zero-filled by timestamp",
                "window": "0.96s centred on snippet centre", "final_relu": config.vggish_final_relu,
                # "mono" and "resampler" changed on 2026-12-04 (before: ffmpeg's -ac 1 and default filter), so
                # every VGGish feature, mono tracks included, is recomputed once; the postprocess value names
                # its 8-bit cast, which truncates as the TF release does. "gaps" (added the same day): audio after a
                # gap in the stream's timestamps had come early by the gap's length.
                "postprocess": "pca_uint8_trunc" if config.vggish_postprocess else False}
    raise ConfigError(f"unknown feature {feature!r}")


def preprocess_hash(config: ExtractConfig, feature: str, random_init: bool = False) -> str:
    """sha256 (hex, 16 chars) of :func:`preprocess_params` as canonical JSON.

    With random weights the seed joins the hash: provenance has no weights hash to tell
    two random initialisations apart.
    """
    params = preprocess_params(config, feature)
    if random_init:
        params = {**params, "random_seed": config.random_seed}
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_from_dict(data: dict, **overrides) -> ExtractConfig:
    """ExtractConfig from plain data (YAML/JSON): nested ``tvl1`` and ``clip`` mappings, ``features`` list.

    ``overrides`` (e.g. from command-line flags; None values ignored) win over ``data``.
    """
    merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = set(ExtractConfig.__dataclass_fields__)
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(f"unknown extraction settings {unknown}; known: {sorted(known)}")
    for key, cls in (("tvl1", TVL1Config), ("clip", ClipConfig)):  # nested typos: name the known keys too
        if isinstance(merged.get(key), dict):
            wrong = sorted(set(merged[key]) - set(cls.__dataclass_fields__))
            if wrong:
                raise ConfigError(f"unknown {key} settings {wrong}; known: {sorted(cls.__dataclass_fields__)}")
    try:
        if isinstance(merged.get("tvl1"), dict):
            merged["tvl1"] = TVL1Config(**merged["tvl1"])
        if isinstance(merged.get("clip"), dict):
            merged["clip"] = ClipConfig(**merged["clip"])
        if "features" in merged:
            f = merged["features"]
            if not isinstance(f, (str, list, tuple)):
                raise ConfigError(f"features: must be a list of feature names, got {f!r}")
            merged["features"] = tuple(x.strip() for x in f.split(",") if x.strip()) if isinstance(f, str) else tuple(f)
        return ExtractConfig(**merged)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid extraction settings: {e}") from e


def read_config_file(path: str | Path) -> dict:
    """The settings a YAML (or JSON) extraction config file holds, as plain data."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        try:  # (JSON first: YAML refuses the tabs JSON files are often indented with; YAML reads the rest)
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)
        data = data or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read extraction config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"extraction config {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load_config_file(path: str | Path, **overrides) -> ExtractConfig:
    """Read a YAML (or JSON) file of ExtractConfig fields; see :func:`config_from_dict`."""
    return config_from_dict(read_config_file(path), **overrides)
