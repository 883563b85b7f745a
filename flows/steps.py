"""The pipeline's steps as plain functions (no Prefect): the tasks wrap these one to one.

Keeping them orchestration-free lets bench/bench_orchestration.py time the very same
steps called directly, and lets the CLI and tests reuse them.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows.params import resolve_path


@dataclass(frozen=True)
class PlannedVideo:
    video_id: str
    path: str
    reason: str  # "new" | "changed" | "missing-features" | "stale-features"
    source_fingerprint: str


@dataclass
class ExtractionPlan:
    """What the store lacks for the discovered videos; ``complete`` needs no work."""

    todo: list[PlannedVideo] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"complete": len(self.complete)}
        for p in self.todo:
            out[p.reason] = out.get(p.reason, 0) + 1
        return out


@dataclass
class StoreCheck:
    fingerprint: str
    num_videos: int
    train_videos: list[str]
    test_videos: list[str]
    incomplete: list[str]
    random_init_features: list[str]


def source_fingerprint(path: str | Path) -> str:
    """The fingerprint the extractors record in ``VideoInfo.source_fingerprint``."""
    from extractors.pipeline import file_fingerprint

    return file_fingerprint(path)


_EXTRACTORS: dict[str, Any] = {}
_EXTRACTORS_LOCK = threading.Lock()


def get_extractors(config):
    """One ``extractors.pipeline.Extractors`` per config and process: networks load once, not per video.

    ``config.torch_threads`` is applied here, once per config before its first video (torch's thread
    count is process-wide; a deployment's flow run is one process with one extraction config).
    """
    from extractors.pipeline import Extractors, apply_torch_threads

    key = repr(config)
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            apply_torch_threads(config)
            _EXTRACTORS[key] = Extractors(config)
        return _EXTRACTORS[key]


def build_extract_config(
    overrides: dict[str, Any], features: list[str], weights_dir: str | None, device: str,
    allow_random_init: bool, grid=None,
):
    """``ExtractConfig`` from the flow parameters; its own validation applies.

    The snippet grid comes from the dataset (the store's grid) unless overridden, and
    nested sections (``tvl1``, ``clip``) may be given as mappings.
    """
    import dataclasses

    from extractors.config import ExtractConfig

    fields: dict[str, Any] = {}
    if grid is not None:
        fields.update(fps=float(grid.fps), snippet_frames=int(grid.snippet_frames), stride=int(grid.stride))
    fields.update(features=tuple(features), device=device, allow_random_weights=allow_random_init)
    if weights_dir is not None:
        fields["weights_dir"] = str(resolve_path(weights_dir))
    known = {f.name: f for f in dataclasses.fields(ExtractConfig)}
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"extract.overrides: unknown ExtractConfig field {name!r} (known: {sorted(known)})")
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = type(default)(**value)
        fields[name] = tuple(value) if name == "features" else value
    return ExtractConfig(**fields)


def discover(source: str) -> list[tuple[str, str]]:
    """(video_id, path) pairs under ``source`` (directory, manifest or glob)."""
    from extractors.manifest import discover_videos

    return [(vid, str(path)) for vid, path in discover_videos(str(resolve_path(source)))]


def load_dataset(dataset_name: str):
    from storage.datasets import load_dataset as _load

    return _load(_dataset_arg(dataset_name))


def open_dataset_store(store_path: str, dataset, config=None):
    """The store (created on the dataset's grid when new). With ``config``, a store that does not exist yet
    is created only after the extraction networks loaded: missing weights leave no empty store behind."""
    from storage import FeatureStore

    path = resolve_path(store_path)
    if config is not None and not (path / "zarr.json").exists():
        get_extractors(config)  # (cached: the extraction tasks use these very networks)
    return FeatureStore.open_or_create(path, grid=dataset.grid, name=dataset.name)


def _dataset_arg(name: str) -> str:
    """Dataset names pass through; YAML paths are resolved against the repository root."""
    return str(resolve_path(name)) if name.endswith((".yaml", ".yml")) else name


def plan_extraction(store, videos: list[tuple[str, str]], features: list[str], config=None) -> ExtractionPlan:
    """Compare each source with the store: new, changed source, missing or stale features, or complete.

    With ``config`` the extractor's own per-feature check decides (same extractor
    version, weights and preprocess hash); without it only presence is checked.
    """
    from extractors.pipeline import plan_video

    models = get_extractors(config) if config is not None else None
    plan = ExtractionPlan()
    wanted = set(features)
    from storage import StoreDamageError

    for vid, path in videos:
        fp = source_fingerprint(path)
        try:
            if not store.has_video(vid):
                reason = "new"
            elif store.video_info(vid).source_fingerprint != fp:
                reason = "changed"
            elif not wanted <= store.features_of(vid) - store.missing_arrays(vid):
                reason = "missing-features"
            elif models is not None and plan_video(store, vid, fp, models)[0]:
                reason = "stale-features"
            else:
                reason = None
        except StoreDamageError:  # unreadable stored metadata: the extractor redoes the video from its source
            reason = "damaged"
        if reason is None:
            plan.complete.append(vid)
        else:
            plan.todo.append(PlannedVideo(vid, path, reason, fp))
    return plan


def extract_one(item: PlannedVideo, store, config, cancel=None) -> dict[str, Any]:
    """Extract one planned video (the extractor itself replaces everything of a changed source). ``cancel``
    (a threading.Event): once set, the extraction stops at its next window and publishes nothing."""
    from extractors.pipeline import extract_video

    t0 = time.perf_counter()
    report = extract_video(item.path, item.video_id, store, config, extractors=get_extractors(config), cancel=cancel)
    out = _report_dict(report)
    out.update(video_id=item.video_id, reason=item.reason, seconds=round(time.perf_counter() - t0, 2))
    return out


def computed_videos(reports: list[dict[str, Any]]) -> list[str]:
    """Ids of the videos this run computed something for (a report with nothing computed found the video
    complete, e.g. extracted meanwhile by a concurrent run)."""
    return [r["video_id"] for r in reports if r.get("computed")]


def _report_dict(report: Any) -> dict[str, Any]:
    if hasattr(report, "to_dict"):
        return dict(report.to_dict())
    if hasattr(report, "__dataclass_fields__"):
        return json.loads(json.dumps(asdict(report), default=str))
    return {"report": str(report)}


def check_store(store, dataset, features: list[str], min_train_videos: int) -> StoreCheck:
    """Every dataset video present in the store must hold the requested features; enough must exist to train."""
    from storage import StoreDamageError

    present = set(store.list_videos())
    wanted = set(features)
    used = present & (set(dataset.videos(dataset.train_subset)) | set(dataset.videos(dataset.test_subset)))
    incomplete, damaged = [], []
    for v in sorted(used):  # (only the videos this run reads: damage elsewhere in the store is not its concern)
        try:
            if not wanted <= store.features_of(v) - store.missing_arrays(v):
                incomplete.append(v)
        except StoreDamageError as e:
            damaged.append(f"{v}: {e.detail}")
    if damaged:  # (every one at once, before any training)
        raise RuntimeError(f"{len(damaged)} videos of {dataset.name!r} are damaged in the store (run the extraction "
                           "again to redo them from their sources):\n  " + "\n  ".join(damaged))
    train = sorted(v for v in dataset.videos(dataset.train_subset) if v in present and v not in incomplete)
    test = sorted(v for v in dataset.videos(dataset.test_subset) if v in present and v not in incomplete)
    if len(train) < min_train_videos:
        raise RuntimeError(
            f"store {store.path if hasattr(store, 'path') else ''} has {len(train)} complete training videos of "
            f"{dataset.name!r} (subset {dataset.train_subset!r}); at least {min_train_videos} are needed"
        )
    from models.data import check_features_made_one_way

    try:
        random_feats = check_features_made_one_way(store, train + test, features)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    return StoreCheck(store.fingerprint(), len(present), train, test, incomplete, sorted(random_feats))


def train_model(training_cfg, store, dataset, out_dir: Path):
    from models.train import train

    return train(training_cfg, store, dataset, out_dir)


def predict_detections(checkpoint: Path, store, dataset, subset: str, device: str) -> dict:
    from models.predict import predict

    return predict(checkpoint, store, dataset, subset, device=device)


def evaluate(dataset, predictions: dict, subset: str):
    """ActivityNet detection mAP; UTAL clusters are mapped to classes by the Hungarian assignment."""
    from models.evaluation.evaluate import evaluate_detection

    ambiguous = dataset.ambiguous() if dataset.ambiguous_path else None
    return evaluate_detection(
        dataset.ground_truth_json(), predictions, subset=subset,
        tiou_thresholds=dataset.tiou_thresholds, ambiguous=ambiguous, mapping="hungarian",
    )


def subset_name(dataset, which: str) -> str:
    return dataset.test_subset if which == "test" else dataset.train_subset


def map_summary(result) -> tuple[dict[float, float], float]:
    """(mAP per tIoU, average mAP) from an ``EvaluationResult``."""
    return {float(t): float(m) for t, m in zip(result.tiou, result.mAP)}, float(result.average_mAP)
