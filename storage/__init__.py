"""The feature store: chunked Zarr v3, atomic per video, readable with plain zarr/xarray."""
from storage.grid import SnippetGrid
from storage.schema import AUDIO_MASK, FEATURE_DIMS, FeatureProvenance, StoreError, VideoInfo, validate_video_id
from storage.store import FeatureStore, StoreDamageError, mixed_configs_message

__all__ = [
    "AUDIO_MASK",
    "FEATURE_DIMS",
    "FeatureProvenance",
    "FeatureStore",
    "SnippetGrid",
    "StoreDamageError",
    "StoreError",
    "VideoInfo",
    "mixed_configs_message",
    "validate_video_id",
]
