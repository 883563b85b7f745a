"""Videos as the model sees them: per-video feature arrays + labels, from a FeatureStore or from memory.

``InMemoryStore`` offers the read side of the storage contract (list_videos / load / iter_videos / grid)
over arrays held in memory, so training, tests and the bench run with or without a Zarr store.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from models.network import AUDIO, AUDIO_MASK, CLIP, FLOW, RGB, FeatureDims

_log = logging.getLogger(__name__)


class GridLike(Protocol):
    fps: float
    snippet_frames: int
    stride: int

    @property
    def snippet_seconds(self) -> float: ...


class StoreLike(Protocol):
    grid: GridLike

    def list_videos(self) -> list[str]: ...
    def load(self, vid: str, features: Iterable[str] | None = None) -> dict[str, np.ndarray]: ...


@dataclass
class VideoFeatures:
    """One video: ``features`` maps feature name -> (T, D) float32 (``audio_mask`` -> (T,) bool)."""

    video_id: str
    features: dict[str, np.ndarray]
    duration: float
    labels: list[int] = field(default_factory=list)     # class indices (weak mode / evaluation)

    @property
    def num_snippets(self) -> int:
        return int(next(iter(self.features.values())).shape[0])


class InMemoryStore:
    """Read-only, store-shaped view over a dict of VideoFeatures."""

    def __init__(self, videos: Iterable[VideoFeatures], grid: GridLike) -> None:
        self._videos = {v.video_id: v for v in videos}
        self.grid = grid

    def list_videos(self) -> list[str]:
        return sorted(self._videos)

    def has_video(self, vid: str) -> bool:
        return vid in self._videos

    def videos(self, video_ids: Iterable[str] | None = None) -> list[VideoFeatures]:
        """The held VideoFeatures (all, sorted by id, or the given ids in order)."""
        return [self._videos[v] for v in (video_ids if video_ids is not None else self.list_videos())]

    def load(self, vid: str, features: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        feats = self._videos[vid].features
        names = list(features) if features is not None else list(feats)
        missing = [n for n in names if n not in feats]
        if missing:
            raise KeyError(f"video {vid!r}: features {missing} not in memory store")
        return {n: feats[n] for n in names}

    def iter_videos(self, features: Iterable[str], video_ids: Iterable[str] | None = None) -> Iterator[tuple[str, dict]]:
        names = list(features)
        for vid in (video_ids if video_ids is not None else self.list_videos()):
            yield vid, self.load(vid, names)


def load_videos(store: StoreLike, dataset, subset: str, features: list[str],
                video_ids: list[str] | None = None) -> list[VideoFeatures]:
    """Videos of ``subset`` that the store holds, with the requested features and their class labels."""
    wanted = video_ids if video_ids is not None else dataset.videos(subset)
    available = set(store.list_videos())
    vids = [v for v in wanted if v in available]
    if not vids:
        raise ValueError(f"no video of subset {subset!r} of dataset {getattr(dataset, 'name', '?')!r} is in the store")
    if len(vids) < len(wanted):
        _log.warning("%d of the %d videos of subset %r are in the store; using those", len(vids), len(wanted), subset)
    check_features_made_one_way(store, vids, features)
    class_index = {c: i for i, c in enumerate(dataset.classes)}
    reader = store.iter_videos(features, vids) if hasattr(store, "iter_videos") else ((v, store.load(v, features)) for v in vids)
    from storage import StoreDamageError

    damage = (StoreDamagedVideos, StoreDamageError)
    out = []
    try:
        for vid, feats in reader:
            _check_finite(store, vid, feats)
            ann = dataset.annotations(vid)
            labels = sorted({class_index[s.label] for s in ann.segments if s.label in class_index})
            out.append(VideoFeatures(vid, dict(feats), float(ann.duration), labels))
    except damage as first:
        # One damaged video stops the read-ahead; read the rest one at a time so the error names every damaged
        # video at once (one re-extraction repairs them all, instead of one failed run per video).
        raise _all_damage(store, vids, features, first, damage) from None
    return out


class StoreDamagedVideos(ValueError):
    """Videos whose stored features cannot be used (damaged files, non-finite values); ``videos`` maps each
    video id to what is wrong with it."""

    SHOWN = 20  # videos listed in the message (all of them are in ``videos``)

    def __init__(self, store, videos: dict[str, str]):
        self.videos = dict(videos)
        items = list(self.videos.items())
        lines = "\n  ".join(f"{v}: {why}" for v, why in items[: self.SHOWN])
        if len(items) > self.SHOWN:
            lines += f"\n  ... and {len(items) - self.SHOWN} more (`clipae store verify` lists them all)"
        path = getattr(store, "path", "")
        super().__init__(f"store {path}: {len(self.videos)} video(s) damaged (delete each and run `clipae extract` "
                         f"again to recompute it; `clipae store verify {path}` lists every problem):\n  {lines}")


def _damage_detail(e: Exception) -> str:
    if isinstance(e, StoreDamagedVideos):
        return next(iter(e.videos.values()))
    return getattr(e, "detail", None) or str(e)


def _all_damage(store, vids: list[str], features: list[str], first: Exception, damage: tuple) -> Exception:
    damaged: dict[str, str] = {}
    for vid in vids:
        try:
            _check_finite(store, vid, store.load(vid, features))
        except damage as e:
            damaged[vid] = _damage_detail(e)
        except Exception:  # noqa: BLE001 -- anything else in this second pass: the first error stands
            return first
    # (nothing found the second time: a file changed between the reads; what the first read saw stands)
    return StoreDamagedVideos(store, damaged) if damaged else first


def _check_finite(store, vid: str, feats: dict) -> None:
    """The store refuses NaN/Inf when it writes, so a non-finite value read back is damage (random bytes in an
    uncompressed chunk of the right size pass the store's size checks): name it here rather than let it surface
    as a NaN loss or an error deep inside the model."""
    for name, a in feats.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise StoreDamagedVideos(store, {vid: f"feature {name!r} holds non-finite values, which the store "
                                                  "never writes: its files are damaged"})


def check_features_made_one_way(store, video_ids: list[str], features: Iterable[str]) -> list[str]:
    """Refuse videos whose features were made different ways; return the features made by random-init networks.

    A model would otherwise mix, say, random-init and pretrained I3D, or two TV-L1 settings, without anyone
    knowing (the Prefect flow and ``clipae train`` / ``predict`` both call this). Stores without provenance
    (in-memory ones) pass.
    """
    if not hasattr(store, "provenance"):
        return []
    from storage import mixed_configs_message

    random_feats: set[str] = set()
    configs = feature_configs(store, video_ids, features, random_feats)
    mixed = mixed_configs_message(configs)
    if mixed:
        raise ValueError(
            f"store {getattr(store, 'path', '')}: these videos hold features made in different ways; re-extract them "
            f"with one setting (clipae extract redoes the features whose settings differ from its own) or use a "
            f"separate store:\n{mixed}")
    if random_feats:
        _log.warning("features %s of these videos come from randomly initialised networks (extracted with "
                     "--allow-random-weights): not comparable with results on pretrained features", sorted(random_feats))
    return sorted(random_feats)


def feature_configs(store, video_ids: Iterable[str], features: Iterable[str],
                    random_init: set[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """feature -> {how it was made (``FeatureProvenance.config_key()``) -> video ids}; {} without provenance.
    Features that some video holds from random-init networks are added to ``random_init`` when given."""
    if not hasattr(store, "provenance"):
        return {}
    from storage import StoreDamageError

    wanted = set(features)
    configs: dict[str, dict[str, list[str]]] = {}
    damaged: dict[str, str] = {}
    for v in video_ids:
        try:
            provenance = store.provenance(v)
        except StoreDamageError as e:  # (go on: every damaged video is named at once, not one per run)
            damaged[v] = _damage_detail(e)
            continue
        for name, prov in provenance.items():
            if name in wanted:
                configs.setdefault(name, {}).setdefault(prov.config_key(), []).append(v)
                if prov.random_init and random_init is not None:
                    random_init.add(name)
    if damaged:
        raise StoreDamagedVideos(store, damaged)
    return configs


def check_same_features_as_training(trained: dict[str, str], store, video_ids: list[str], features) -> None:
    """Refuse videos whose features were made another way than those the model was trained on (``trained``:
    feature -> config key, from the checkpoint): re-extracted test videos, or another store."""
    for name, by_key in feature_configs(store, video_ids, features).items():
        other = {k: v for k, v in by_key.items() if name in trained and k != trained[name]}
        if other:
            key, vids = next(iter(other.items()))
            raise ValueError(f"{name} of {sum(map(len, other.values()))} videos (e.g. {vids[0]!r}) was made another way "
                             f"than the training videos':\n  trained on: {trained[name]}\n  these:      {key}\n"
                             "re-extract them like the training videos, or retrain")


def feature_dims(videos: list[VideoFeatures]) -> FeatureDims:
    f = videos[0].features
    get = lambda n, d: int(f[n].shape[1]) if n in f else d  # noqa: E731
    return FeatureDims(rgb=get(RGB, 1024), flow=get(FLOW, 1024), clip=get(CLIP, 512), audio=get(AUDIO, 128))


def prepare(v: VideoFeatures, names: list[str]) -> dict[str, np.ndarray]:
    """Model inputs of one video: float arrays; audio zeroed where ``audio_mask`` says there is none."""
    out = {}
    for n in names:
        if n == AUDIO_MASK:
            continue
        a = np.asarray(v.features[n], dtype=np.float32)
        if n == AUDIO and AUDIO_MASK in v.features:
            a = a * np.asarray(v.features[AUDIO_MASK], dtype=bool)[:, None].astype(np.float32)
        out[n] = a
    return out


def collate(items: list[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a list of per-video input dicts to the longest; adds ``mask`` (B, T) True on real snippets."""
    t_max = max(next(iter(it.values())).shape[0] for it in items)
    batch: dict[str, torch.Tensor] = {}
    for n in items[0]:
        d = items[0][n].shape[1]
        arr = np.zeros((len(items), t_max, d), dtype=np.float32)
        for i, it in enumerate(items):
            arr[i, : it[n].shape[0]] = it[n]
        batch[n] = torch.from_numpy(arr).to(device)
    mask = np.zeros((len(items), t_max), dtype=bool)
    for i, it in enumerate(items):
        mask[i, : next(iter(it.values())).shape[0]] = True
    batch["mask"] = torch.from_numpy(mask).to(device)
    return batch


def random_window(arrays: dict[str, np.ndarray], max_len: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random run of ``max_len`` consecutive snippets: full temporal resolution, as ju2023 samples (its
    T is 1000 on THUMOS'14 and 400 on ActivityNet v1.2; our default 192 is smaller, docs/model.md "Schedule")."""
    t = next(iter(arrays.values())).shape[0]
    if t <= max_len:
        return arrays
    s = int(rng.integers(0, t - max_len + 1))
    return {n: a[s: s + max_len] for n, a in arrays.items()}
