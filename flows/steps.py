"""The pipeline's steps as plain functions (no Prefect): the tasks wrap these one to one.

Keeping them orchestration-free lets bench/bench_orchestration.py time the very same
steps called directly, and lets the CLI and tests reuse them.
"""
from __future__ import annotations

import json
import os
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
    reason: str  # "new" | "changed" | "missing-features" | "stale-features" | "damaged"
    source_fingerprint: str
    source_mtime_ns: int | None = None  # when planned (None: the file could not be read)


@dataclass
class ExtractionPlan:
    """What the store lacks for the discovered videos; ``complete`` needs no work."""

    todo: list[PlannedVideo] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # complete stored videos whose source cannot be read now

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"complete": len(self.complete)}
        for p in self.todo:
            out[p.reason] = out.get(p.reason, 0) + 1
        if self.unreadable:
            out["stored, source unreadable"] = len(self.unreadable)
        return out


@dataclass
class StoreCheck:
    fingerprint: str
    num_videos: int
    train_videos: list[str]
    test_videos: list[str]
    incomplete: list[str]
    random_init_features: list[str]


#: Fingerprint prefix of a source file that could not be read while planning
UNREADABLE = "unreadable: "


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


#: ExtractConfig fields the flows set from their own parameters (field -> parameter)
FLOW_OWNED_FIELDS = {"features": "features", "device": "device", "allow_random_weights": "allow_random_init",
                     "weights_dir": "weights_dir"}
GRID_FIELDS = ("fps", "snippet_frames", "stride")


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
        if name in FLOW_OWNED_FIELDS:  # (an override would silently beat the flow's parameter: the plan, the
            # concurrency limit and the run record follow the parameter, the extraction the override)
            raise ValueError(f"extract.overrides.{name}: set by the flow's own parameter "
                             f"{FLOW_OWNED_FIELDS[name]!r}, not in the overrides")
        if grid is not None and name in GRID_FIELDS and value != fields[name]:
            raise ValueError(f"extract.overrides.{name}={value!r}: the snippet grid comes from the dataset config "
                             f"(fps={grid.fps:g}, snippet_frames={grid.snippet_frames}, stride={grid.stride}); "
                             "a store holds one grid, so change the dataset's grid (and use a new store) instead")
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            sub = {f.name for f in dataclasses.fields(default)}
            unknown = sorted(set(value) - sub)
            if unknown:
                raise ValueError(f"extract.overrides.{name}: unknown keys {unknown} (known: {sorted(sub)})")
            value = type(default)(**value)
        fields[name] = value
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
        try:
            mtime_ns = os.stat(path).st_mtime_ns  # (before the bytes: a file rewritten meanwhile looks changed)
            fp = source_fingerprint(path)
        except OSError as e:  # (a listed file that is missing, a dangling link, unreadable: that video's failure
            # alone, in its task, where the extractor says what is wrong with it)
            mtime_ns, fp = None, f"{UNREADABLE}{e.strerror or type(e).__name__}"
        unreadable = fp.startswith(UNREADABLE)
        try:
            if not store.has_video(vid):
                reason = "new"
            elif not unreadable and store.video_info(vid).source_fingerprint != fp:
                reason = "changed"
            elif not wanted <= store.features_of(vid) - store.missing_arrays(vid):
                reason = "missing-features"
            elif models is not None and plan_video(
                    store, vid, store.video_info(vid).source_fingerprint if unreadable else fp, models)[0]:
                reason = "stale-features"
            else:  # (a stored video whose source went away, e.g. deleted to save space, keeps its features)
                reason = None
        except StoreDamageError:  # unreadable stored metadata: the extractor redoes the video from its source
            reason = "damaged"
        if reason is None:
            plan.complete.append(vid)
            if unreadable:
                plan.unreadable.append(vid)
        else:
            plan.todo.append(PlannedVideo(vid, path, reason, fp, mtime_ns))
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


def check_run_inputs(dataset, training_cfg, features: list[str], predict_subset: str,
                     min_train_videos: int = 1, store_exists: bool = False) -> tuple[list[str], list[str]]:
    """Before any extraction (hours on a real dataset), what would only fail after it: the annotations
    readable, the training and predicted subsets not empty (and annotating enough training videos), and
    every feature the model reads among ``features``, or, for a store that exists, possibly in it already
    (a run that adds one feature to a store, or extracts beside imported ones; check-store then requires
    them per video). Returns (the features the model reads: what a video must hold to be used, those of
    them this run does not extract)."""
    from flows.params import ALL_FEATURES
    from models.train import features_read, min_training_videos

    subsets = sorted({dataset.annotations(v).subset for v in dataset.videos()})  # (reads the annotation file)
    for role, name in (("train_subset", dataset.train_subset), (f"{predict_subset}_subset",
                                                                  subset_name(dataset, predict_subset))):
        if not dataset.videos(name):
            raise ValueError(f"dataset {dataset.name!r}: no video of subset {name!r} ({role}) in "
                             f"{dataset.annotation_path}; its subsets: {subsets}")
    annotated = len(dataset.videos(dataset.train_subset))
    utal = training_cfg.train.mode == "utal"
    need = max(min_train_videos, min_training_videos(training_cfg.train.mode, dataset.num_classes))
    if annotated < need:
        why = f"; UTAL clusters them into the dataset's {dataset.num_classes} classes" if utal else ""
        raise ValueError(f"dataset {dataset.name!r}: subset {dataset.train_subset!r} has {annotated} videos; training "
                         f"needs at least {need} (min_train_videos={min_train_videos}{why})")
    needed = [f for f in features_read(training_cfg) if f in ALL_FEATURES]
    missing = [f for f in needed if f not in features]
    if missing and not store_exists:
        raise ValueError(f"features {list(features)}: the model also reads {missing} (its switches and "
                         "train.cluster_features), and the new store would never hold them; add them to "
                         "`features`, or turn them off in the model config")
    return needed, missing


def check_store(store, dataset, features: list[str], min_train_videos: int, predict_subset: str = "test",
                mode: str = "utal", failed: list[str] = ()) -> StoreCheck:
    """Every dataset video present in the store must hold the requested features; enough must exist to train
    (UTAL clusters the training videos into the dataset's classes: at least one video per class) and one
    video to predict. Videos whose extraction failed in this run (``failed``) are left out: what the store
    holds of them no longer matches their listed file (a changed file that failed, stale features whose
    source is gone)."""
    from storage import StoreDamageError

    stored = set(store.list_videos())
    present = stored - set(failed)
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
    from models.train import min_training_videos

    need = max(min_train_videos, min_training_videos(mode, dataset.num_classes))
    if len(train) < need:
        why = f"min_train_videos={min_train_videos}" if need == min_train_videos else \
            f"UTAL clusters them into the dataset's {dataset.num_classes} classes"
        raise RuntimeError(
            f"store {store.path if hasattr(store, 'path') else ''} has {len(train)} complete training videos of "
            f"{dataset.name!r} (subset {dataset.train_subset!r}); at least {need} are needed ({why})"
        )
    if not (train if predict_subset == "train" else test):
        raise RuntimeError(
            f"store {store.path if hasattr(store, 'path') else ''} has no complete video of {dataset.name!r}'s "
            f"subset {subset_name(dataset, predict_subset)!r} to predict and evaluate on")
    from models.data import check_features_made_one_way

    try:
        random_feats = check_features_made_one_way(store, train + test, features)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    return StoreCheck(store.fingerprint(), len(stored), train, test, incomplete, sorted(random_feats))


def train_model(training_cfg, store, dataset, out_dir: Path, video_ids: list[str] | None = None):
    """Train on ``video_ids`` (the complete training videos check_store found; None: every stored one)."""
    from models.train import train

    return train(training_cfg, store, dataset, out_dir, video_ids=video_ids)


def predict_detections(checkpoint: Path, store, dataset, subset: str, device: str,
                       video_ids: list[str] | None = None) -> dict:
    from models.predict import predict

    return predict(checkpoint, store, dataset, subset, device=device, video_ids=video_ids)


def evaluate(dataset, predictions: dict, subset: str):
    """ActivityNet detection mAP; UTAL clusters are mapped to classes by the Hungarian assignment.

    Only the videos predicted are evaluated: a test video of the annotations that is not in the store
    (its file missing, its extraction failed) is left out rather than counted as all missed, and the run
    says how many (``not_evaluated``): its summary, log and record."""
    from models.evaluation.evaluate import evaluate_detection

    gt = dataset.ground_truth_json()
    predicted = set(predictions.get("results", {}))
    gt["database"] = {v: a for v, a in gt["database"].items() if v in predicted}
    ambiguous = dataset.ambiguous() if dataset.ambiguous_path else None
    return evaluate_detection(
        gt, predictions, subset=subset,
        tiou_thresholds=dataset.tiou_thresholds, ambiguous=ambiguous, mapping="hungarian",
    )


def not_evaluated(dataset, predictions: dict, subset: str) -> list[str]:
    """Videos of ``subset`` in the annotations that the run did not predict (absent or incomplete in the store)."""
    predicted = set(predictions.get("results", {}))
    return [v for v in dataset.videos(subset) if v not in predicted]


def subset_name(dataset, which: str) -> str:
    return dataset.test_subset if which == "test" else dataset.train_subset


def map_summary(result) -> tuple[dict[float, float], float]:
    """(mAP per tIoU, average mAP) from an ``EvaluationResult``."""
    return {float(t): float(m) for t, m in zip(result.tiou, result.mAP)}, float(result.average_mAP)
