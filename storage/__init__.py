"""The feature store: chunked Zarr v3, atomic per video, readable with plain zarr/xarray."""
from storage.grid import SnippetGrid
from storage.schema import AUDIO_MASK, FEATURE_DIMS, FeatureProvenance, StoreError, VideoInfo, validate_video_id
from storage.store import ANY_VERSION, FeatureStore, StoreConflict, StoreDamageError, mixed_configs_message

__all__ = [
    "ANY_VERSION",
    "AUDIO_MASK",
    "FEATURE_DIMS",
    "FeatureProvenance",
    "FeatureStore",
    "SnippetGrid",
    "StoreConflict",
    "StoreDamageError",
    "StoreError",
    "VideoInfo",
    "mixed_configs_message",
    "validate_video_id",
]
