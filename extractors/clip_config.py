"""CLIP snippet-feature settings, free of torch so that configs, the CLI and outside readers load fast.

The model and its loading live in extractors/clip_features.py, which re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass

from clipae.fields import check_fields

CLIP_FEATURE_DIM = 512
#: Bump when a change alters the features extractors/clip_features.py produces.
CLIP_EXTRACTOR_VERSION = "clip_vitb16/1"


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP model and how snippets are sampled and pooled."""

    model_name: str = "ViT-B-16"
    quick_gelu: bool = True
    frames_per_snippet: int = 4
    seed: int = 0  # random init is reproducible (tests, benchmarks)

    def __post_init__(self) -> None:
        check_fields(self, "clip")  # (types first: a YAML "5" for a count, "no" for a switch)
        if self.frames_per_snippet < 1:
            raise ValueError(f"frames_per_snippet must be >= 1, got {self.frames_per_snippet}")


def clip_sample_positions(snippet_frames: int, k: int) -> list[int]:
    """Frame offsets inside a snippet that CLIP embeds: the centres of ``k`` equal sub-blocks."""
    if not 1 <= k <= snippet_frames:
        raise ValueError(f"cannot sample {k} frames from a {snippet_frames}-frame snippet")
    return [int((j + 0.5) * snippet_frames / k) for j in range(k)]
