"""Small builders shared by the storage tests."""
from __future__ import annotations

import numpy as np

from storage import FeatureProvenance, VideoInfo

SMALL_DIMS = {"i3d_rgb": 16, "i3d_flow": 16, "clip_vitb16": 8, "vggish": 4}


def prov(name: str = "test", version: str = "1") -> FeatureProvenance:
    return FeatureProvenance(extractor=name, extractor_version=version, weights_sha256=None,
                             random_init=True, preprocess_hash="p0")


def info(vid: str = "v") -> VideoInfo:
    return VideoInfo(source=f"/videos/{vid}.mp4", source_fingerprint=f"fp-{vid}", fps=25.0, num_frames=400,
                     duration=16.0, has_audio=True, width=320, height=240)


def feats(t: int, dims=SMALL_DIMS, value: float | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, d in dims.items():
        out[k] = np.full((t, d), value, np.float32) if value is not None else rng.random((t, d), dtype=np.float32)
    if "vggish" in dims:
        out["audio_mask"] = np.ones(t, bool)
    return out


def provs(features) -> dict[str, FeatureProvenance]:
    return {k: prov() for k in features if k != "audio_mask"}


def small_store(path, video_ids, t: int = 10):
    """A store on the THUMOS grid holding ``video_ids``, each complete with ``t`` snippets of SMALL_DIMS features."""
    from storage import FeatureStore, SnippetGrid

    store = FeatureStore.create(path, grid=SnippetGrid(25.0, 16, 16), features=SMALL_DIMS)
    for vid in video_ids:
        f = feats(t)
        store.write_video(vid, f, info(vid), provs(f))
    return store
