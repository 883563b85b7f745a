"""Typed, validated parameters of the flows (pydantic, so Prefect renders and checks them).

Relative paths in parameters are resolved against the repository root, not the worker's
current directory, so a deployment behaves the same from any worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clipae import REPO_ROOT

FeatureName = Literal["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"]
ALL_FEATURES: list[str] = ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"]


def resolve_path(value: str | Path) -> Path:
    """Absolute paths stay; relative ones are taken from the repository root."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p)


def check_device(v: str) -> str:
    if v not in ("cpu", "auto", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"device must be 'cpu', 'auto', 'cuda' or 'cuda:<index>', got {v!r}")
    return v


class ExtractOptions(BaseModel):
    """Overrides of ``extractors.config.ExtractConfig`` (only the fields given are changed).

    Kept as a mapping validated by constructing the real ExtractConfig, so the flow
    never drifts from the extractor's own settings and their checks.
    """

    model_config = ConfigDict(extra="forbid")

    overrides: dict[str, Any] = Field(default_factory=dict, description="ExtractConfig field -> value")

    def build(self, features: list[str], weights_dir: str | None, device: str, allow_random_init: bool, grid=None):
        from flows.steps import build_extract_config

        return build_extract_config(self.overrides, features, weights_dir, device, allow_random_init, grid)


class TrainingOptions(BaseModel):
    """Training/inference settings: a model YAML plus section overrides (``{"train": {"rounds": 1}}``)."""

    model_config = ConfigDict(extra="forbid")

    model_config_path: str | None = Field(
        default=None, description="model YAML (default configs/models/clipae.yaml)"
    )
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    predict_subset: Literal["train", "test"] = "test"

    def build(self, device: str):
        from models.config import DEFAULT_CONFIG, ClipAEConfig, load_config

        if self.model_config_path:
            cfg = load_config(str(resolve_path(self.model_config_path)))
        else:  # the repository's default YAML, or the dataclass defaults it mirrors
            cfg = load_config(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else ClipAEConfig()
        sections = {k: dict(v) for k, v in self.overrides.items()}
        sections.setdefault("train", {}).setdefault("device", device)
        try:
            return cfg.replace(**sections)
        except KeyError as exc:  # unknown section: a parameter error like the others
            raise ValueError(f"training.overrides: {exc.args[0]}") from None


class ExtractAndTrainParams(BaseModel):
    """Everything one ``extract-and-train`` run depends on (recorded verbatim in its run record)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="dataset name (configs/datasets/<name>.yaml) or a YAML path")
    source: str = Field(description="video directory, manifest file, or glob (see extractors.manifest)")
    store: str = Field(description="Zarr feature store path (created if absent)")
    features: list[FeatureName] = Field(default_factory=lambda: list(ALL_FEATURES), min_length=1)
    weights_dir: str | None = Field(default=None, description="pretrained weights dir (default $CLIPAE_WEIGHTS_DIR)")
    device: str = Field(default="cpu", description="'cpu', 'cuda' or 'cuda:<i>'")
    allow_random_init: bool = Field(
        default=False, description="extract with random weights when a file is missing (demo only; recorded)"
    )
    extract: ExtractOptions = Field(default_factory=ExtractOptions)
    training: TrainingOptions = Field(default_factory=TrainingOptions)
    runs_dir: str | None = Field(default=None, description="run records root (default $CLIPAE_RUNS_DIR or runs/)")
    min_train_videos: int = Field(default=2, ge=1, description="fail before training with fewer complete videos")
    plot_videos: int = Field(default=3, ge=0, le=20, description="activation plots for this many test videos")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate features in {v}")
        return v


class ReextractParams(BaseModel):
    """``reextract``: extract only new/changed videos; optionally start a training run."""

    model_config = ConfigDict(extra="forbid")

    source: str
    store: str
    dataset: str
    features: list[FeatureName] = Field(default_factory=lambda: list(ALL_FEATURES), min_length=1)
    weights_dir: str | None = None
    device: str = "cpu"
    allow_random_init: bool = False
    extract: ExtractOptions = Field(default_factory=ExtractOptions)
    trigger_deployment: str | None = Field(
        default=None, description="e.g. 'extract-and-train/thumos': run it when enough new videos arrived"
    )
    trigger_min_new_videos: int = Field(default=10, ge=1)
    trigger_parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)


def resolve_device(device: str) -> str:
    """``auto`` as extraction resolves it: the first GPU when CUDA is available, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def gpu_limit_name(device: str) -> str:
    """Name of the Prefect global concurrency limit guarding one accelerator (or the CPU).

    Each running extraction holds one slot, so the limit's size (``CLIPAE_VIDEOS_PER_GPU``, default 8)
    caps the videos extracted at once on that GPU across every flow run and worker;
    ``deploy/setup.sh`` creates ``gpu-0`` ... and ``cpu-extract``, and a flow creates a missing
    ``gpu-N`` itself (flows/limits.py). ``auto`` is resolved to the device extraction will use.
    """
    device = resolve_device(device)
    if device.startswith("cuda"):
        index = device.split(":", 1)[1] if ":" in device else "0"
        return f"gpu-{index}"
    return "cpu-extract"
