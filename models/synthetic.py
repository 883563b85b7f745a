"""Synthetic THUMOS-structured features with a learnable signal, shared by tests, bench and ablation.

Structure comes from the real annotations (video ids, durations, subsets, segments, classes); values are
designed so that each CLIP-AE component has something to find:

* I3D RGB / flow (CBP view): per-class action prototypes, strong only in the *middle* half of each
  action and weak at its ends (classification features focus on discriminative frames); a per-class
  scene vector over the whole video (context) and generic background events.
* CLIP (VLP view): flat action signal over the action *extended* by ``clip_margin`` of its length on both
  sides (over-complete), plus a stronger scene vector.
* VGGish audio: exact-boundary action signal for the "audible" classes only (``audible_fraction`` of the
  classes); noise for the others. ``no_audio_fraction`` of the videos have no audio: audio_mask False and
  zero features (what the audio extractor writes for silent videos).

All signals are unit prototypes times an amplitude over per-dimension N(0, 1) noise, so the difficulty
(the matched-filter SNR) does not depend on the feature dimension.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data import InMemoryStore, VideoFeatures
from models.network import AUDIO, AUDIO_MASK, CLIP, FLOW, RGB

FULL_DIMS = {RGB: 1024, FLOW: 1024, CLIP: 512, AUDIO: 128}
SMALL_DIMS = {RGB: 64, FLOW: 64, CLIP: 48, AUDIO: 32}


@dataclass
class SignalConfig:
    i3d_action: float = 2.5        # amplitude in the middle of an action (RGB); flow uses flow_scale x this
    flow_scale: float = 0.8
    i3d_edge: float = 0.2          # fraction of the amplitude left in the first/last quarter of an action
    i3d_scene: float = 0.8         # per-class context over the whole video
    background_events: float = 1.5 # generic background prototypes in random stretches
    clip_action: float = 2.0
    clip_margin: float = 0.4       # CLIP fires on [s - m*len, e + m*len]
    clip_scene: float = 1.2
    audio_action: float = 3.0
    audible_fraction: float = 0.5
    no_audio_fraction: float = 0.15
    num_background_protos: int = 8


@dataclass
class SyntheticSpec:
    dims: dict[str, int] = field(default_factory=lambda: dict(SMALL_DIMS))
    signal: SignalConfig = field(default_factory=SignalConfig)
    seed: int = 0


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class _Prototypes:
    def __init__(self, spec: SyntheticSpec, num_classes: int) -> None:
        rng = np.random.default_rng([spec.seed, 7])
        self.action = {n: _unit(rng, num_classes, d) for n, d in spec.dims.items()}
        self.scene = {n: _unit(rng, num_classes, d) for n, d in spec.dims.items()}
        self.background = {n: _unit(rng, spec.signal.num_background_protos, d) for n, d in spec.dims.items()}
        k_aud = int(round(num_classes * spec.signal.audible_fraction))
        self.audible = set(rng.permutation(num_classes)[:k_aud].tolist())


def action_profile(length: int, edge: float) -> np.ndarray:
    """I3D weight along an action of ``length`` snippets: 1 in the middle half, ``edge`` in the outer quarters."""
    p = (np.arange(length) + 0.5) / max(length, 1)
    return np.where((p >= 0.25) & (p <= 0.75), 1.0, edge).astype(np.float32)


def segment_snippets(start: float, end: float, snippet_seconds: float, t: int) -> tuple[int, int]:
    """Snippets [a, b) whose centres fall inside [start, end]; at least the snippet holding the midpoint."""
    a = int(np.ceil(start / snippet_seconds - 0.5))
    b = int(np.floor(end / snippet_seconds - 0.5)) + 1
    if b <= a:
        a = int(np.clip((start + end) / 2 / snippet_seconds, 0, t - 1))
        b = a + 1
    return max(0, min(a, t)), max(0, min(b, t))


def synthesize_video(vid: str, duration: float, segments: list[tuple[float, float, int]], protos: _Prototypes,
                     spec: SyntheticSpec, fps: float, snippet_frames: int, stride: int) -> dict[str, np.ndarray]:
    sig = spec.signal
    t = max(1, (int(duration * fps) - snippet_frames) // stride + 1)
    sec = stride / fps
    rng = np.random.default_rng([spec.seed, zlib.crc32(vid.encode())])
    feats = {n: rng.standard_normal((t, d), dtype=np.float32) for n, d in spec.dims.items()}
    classes = sorted({c for _, _, c in segments})
    main = classes[0] if classes else int(rng.integers(len(protos.scene[RGB])))
    # context: the video's scene (first class) everywhere
    for n, amp in ((RGB, sig.i3d_scene), (FLOW, sig.i3d_scene * sig.flow_scale), (CLIP, sig.clip_scene)):
        if n in feats:
            feats[n] += amp * protos.scene[n][main]
    # generic background events (same for every class): something the attention must learn to ignore
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(2, max(3, t // 6)))
        s = int(rng.integers(0, max(1, t - length)))
        b = int(rng.integers(sig.num_background_protos))
        for n in (RGB, FLOW, CLIP):
            if n in feats:
                feats[n][s: s + length] += sig.background_events * protos.background[n][b]
    for start, end, c in segments:
        a, b = segment_snippets(start, end, sec, t)
        prof = action_profile(b - a, sig.i3d_edge)[:, None]
        feats[RGB][a:b] += sig.i3d_action * prof * protos.action[RGB][c]
        feats[FLOW][a:b] += sig.i3d_action * sig.flow_scale * prof * protos.action[FLOW][c]
        if CLIP in feats:
            m = max(1, int(round((b - a) * sig.clip_margin)))
            feats[CLIP][max(0, a - m): min(t, b + m)] += sig.clip_action * protos.action[CLIP][c]
        if AUDIO in feats and c in protos.audible:
            feats[AUDIO][a:b] += sig.audio_action * protos.action[AUDIO][c]
    if AUDIO in feats:
        has_audio = rng.random() >= sig.no_audio_fraction
        feats[AUDIO_MASK] = np.full(t, has_audio, dtype=bool)
        if not has_audio:
            feats[AUDIO][:] = 0.0
    return feats


def synthetic_videos(dataset, spec: SyntheticSpec | None = None, subset: str | None = None,
                     video_ids: list[str] | None = None) -> list[VideoFeatures]:
    """In-memory synthetic features for the dataset's videos (optionally one subset / some ids)."""
    spec = spec or SyntheticSpec()
    class_index = {c: i for i, c in enumerate(dataset.classes)}
    protos = _Prototypes(spec, len(class_index))
    grid = dataset.grid
    out = []
    for vid in (video_ids if video_ids is not None else dataset.videos(subset)):
        ann = dataset.annotations(vid)
        segs = [(s.start, s.end, class_index[s.label]) for s in ann.segments if s.label in class_index]
        feats = synthesize_video(vid, ann.duration, segs, protos, spec, grid.fps, grid.snippet_frames, grid.stride)
        out.append(VideoFeatures(vid, feats, float(ann.duration), sorted({c for *_, c in segs})))
    return out


def synthetic_memory_store(dataset, spec: SyntheticSpec | None = None, subset: str | None = None,
                           video_ids: list[str] | None = None) -> InMemoryStore:
    return InMemoryStore(synthetic_videos(dataset, spec, subset, video_ids), dataset.grid)


def pick_videos(dataset, per_subset: int, seed: int = 0, max_duration: float | None = None) -> list[str]:
    """A reproducible subset of videos of both the train and test subset (small, fast test sets)."""
    rng = np.random.default_rng(seed)
    out = []
    for sub in (dataset.train_subset, dataset.test_subset):
        vids = [v for v in dataset.videos(sub)
                if max_duration is None or dataset.annotations(v).duration <= max_duration]
        out += sorted(rng.permutation(vids)[:per_subset].tolist())
    return out


def synthetic_problem(dataset, dims: str = "small", videos_per_subset: int = 0, seed: int = 0):
    """In-memory synthetic features for ``dataset`` split by its subsets: (store, train videos, test videos).

    ``dims``: "full" (the real feature widths) or "small"; ``videos_per_subset`` 0 keeps every video.
    """
    spec = SyntheticSpec(dims=dict(FULL_DIMS if dims == "full" else SMALL_DIMS), seed=seed)
    vids = pick_videos(dataset, videos_per_subset, seed=seed) if videos_per_subset else None
    store = synthetic_memory_store(dataset, spec, video_ids=vids)
    test_ids = set(dataset.videos(dataset.test_subset))
    train_v = [v for v in store.videos() if v.video_id not in test_ids]
    test_v = [v for v in store.videos() if v.video_id in test_ids]
    return store, train_v, test_v


def write_synthetic_store(path: str | Path, dataset, videos: list[VideoFeatures], spec: SyntheticSpec | None = None):
    """Write ``videos`` into a real FeatureStore at ``path`` (created with the spec's feature dims)."""
    from storage import FeatureProvenance, FeatureStore, VideoInfo

    spec = spec or SyntheticSpec()
    store = FeatureStore.open_or_create(path, grid=dataset.grid, name=f"{dataset.name}-synthetic", features=dict(spec.dims))
    grid = dataset.grid
    for v in videos:
        has_audio = bool(v.features[AUDIO_MASK].any()) if AUDIO_MASK in v.features else None
        info = VideoInfo(source=f"synthetic://{v.video_id}", source_fingerprint=f"seed{spec.seed}", fps=grid.fps,
                         num_frames=int(v.duration * grid.fps), duration=v.duration, has_audio=has_audio)
        prov = {n: FeatureProvenance(extractor="models.synthetic", extractor_version="1", weights_sha256=None,
                                     random_init=True, preprocess_hash=f"seed{spec.seed}",
                                     params={"signal": spec.signal.__dict__})
                for n in v.features if n != AUDIO_MASK}
        store.write_video(v.video_id, v.features, info, prov)
    return store


class ClassSubsetDataset:
    """A dataset restricted to some classes and videos (same interface as storage.datasets.DatasetConfig):
    small, fast problems with the real structure. Videos with any other class are dropped."""

    def __init__(self, base, classes: list[str], max_videos_per_subset: int | None = None, seed: int = 0,
                 max_duration: float | None = None) -> None:
        self.base, self.classes = base, list(classes)
        self.name = f"{base.name}[{len(classes)} classes]"
        self.train_subset, self.test_subset = base.train_subset, base.test_subset
        self.tiou_thresholds, self.grid = list(base.tiou_thresholds), base.grid
        self.ambiguous_path = getattr(base, "ambiguous_path", None)
        keep = set(classes)
        rng = np.random.default_rng(seed)
        self._videos: dict[str, list[str]] = {}
        for sub in (base.train_subset, base.test_subset):
            vids = [v for v in base.videos(sub)
                    if (labels := {s.label for s in base.annotations(v).segments}) and labels <= keep
                    and (max_duration is None or base.annotations(v).duration <= max_duration)]
            if max_videos_per_subset is not None:
                vids = sorted(rng.permutation(vids)[:max_videos_per_subset].tolist())
            self._videos[sub] = vids

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def videos(self, subset: str | None = None) -> list[str]:
        return list(self._videos[subset]) if subset else self._videos[self.train_subset] + self._videos[self.test_subset]

    def annotations(self, vid: str):
        return self.base.annotations(vid)

    def ground_truth_json(self) -> dict:
        gt = self.base.ground_truth_json()
        keep = set(self.videos())
        return {**gt, "database": {k: v for k, v in gt["database"].items() if k in keep}}

    def ambiguous(self) -> dict:
        return self.base.ambiguous() if self.ambiguous_path else {}
