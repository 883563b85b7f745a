"""Inference: ActivityNet-format detections from a trained checkpoint.

Entry point for the CLI and the Prefect flow: ``predict(checkpoint, store, dataset, subset) -> dict``.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from models import checkpoint as ckpt
from models.config import ClipAEConfig, InferenceConfig
from models.data import VideoFeatures, check_same_features_as_training, load_videos, prepare
from models.network import ClipAENet, FeatureDims, required_features
from models.proposals import video_detections
from models.runtime import forward_full, pick_device

PREDICTIONS_VERSION = "CLIP-AE 0.1"


def load_model(checkpoint, device: str = "auto") -> tuple[ClipAENet, dict, ClipAEConfig]:
    path = ckpt.resolve_checkpoint(checkpoint)
    dev = pick_device(device)
    state = ckpt.load(path, dev, required=("model", "meta"))
    meta = state["meta"]
    lacking = [k for k in ("config", "num_classes", "dims", "num_train_videos") if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise ckpt.CheckpointError(f"{path}: not a clipae model checkpoint (its meta lacks {lacking})")
    cfg = ClipAEConfig.from_saved(json.loads(meta["config"]))
    model = ClipAENet(cfg, int(meta["num_classes"]), FeatureDims(**meta["dims"]), int(meta["num_train_videos"]))
    model.load_state_dict(state["model"])
    return model.to(dev), meta, cfg


def check_checkpoint_fits(meta: dict, dataset, checkpoint) -> None:
    """A weakly supervised checkpoint labels detections with the classes it was trained on: on a dataset with
    other classes every detection is silently an unknown label (mAP 0). A UTAL one with another cluster count
    than the dataset's classes, or from another dataset, is allowed (the cluster mapping copes) but named."""
    import warnings

    classes = list(getattr(dataset, "classes", []) or [])
    trained = list(meta.get("classes") or [])
    if meta.get("mode") == "weak" and classes and trained and trained != classes:
        raise ValueError(f"checkpoint {checkpoint}: trained (weakly supervised) on the {len(trained)} classes of "
                         f"dataset {meta.get('dataset')!r}, not on the {len(classes)} of {dataset.name!r} "
                         f"(e.g. {trained[0]!r} vs {classes[0]!r}): its labels would match none")
    name = getattr(dataset, "name", None)
    if meta.get("mode") == "utal" and meta.get("dataset") and name and meta["dataset"] != name:
        warnings.warn(f"checkpoint {checkpoint} was trained on dataset {meta['dataset']!r}, predicting on {name!r}",
                      stacklevel=3)


def predict(checkpoint, store, dataset, subset: str | None = None, *, videos: list[VideoFeatures] | None = None,
            inference: InferenceConfig | None = None, device: str = "auto", video_ids: list[str] | None = None) -> dict:
    """Detections for every video of ``subset`` (default: the dataset's test subset) that the store holds.

    UTAL checkpoints label detections ``cluster_<k>`` and add ``video_clusters``; weak ones use class names.
    """
    model, meta, cfg = load_model(checkpoint, device)
    if dataset is not None:
        check_checkpoint_fits(meta, dataset, checkpoint)
    dev = next(model.parameters()).device
    if dev.type == "cpu" and cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    icfg = inference or cfg.inference
    names = required_features(cfg)
    if videos is None:
        videos = load_videos(store, dataset, subset or dataset.test_subset, names, video_ids)
        check_same_features_as_training(meta.get("feature_configs") or {}, store, [v.video_id for v in videos], names)
    grid = store.grid
    items = [prepare(v, names) for v in videos]

    def extract(outs, mask):
        f = ClipAENet.fused_scores(outs, mask)
        lens = mask.sum(1).tolist()
        return [(f["video"][i].cpu().numpy(), f["cas"][i, :n].cpu().numpy(), f["attention"][i, :n].cpu().numpy())
                for i, n in enumerate(lens)]

    scored = forward_full(model, items, dev, cfg.train.amp, extract)
    utal = meta["mode"] == "utal"
    classes = meta["classes"]
    label_of = (lambda c: f"cluster_{c}") if utal else (lambda c: classes[c])
    results, clusters = {}, {}
    offset = (grid.snippet_frames - grid.stride) / (2.0 * grid.fps)  # overlapping snippets: centred, see proposals
    for v, (vs, cas, att) in zip(videos, scored):
        vs, cas, att = vs.astype(np.float64), cas.astype(np.float64), att.astype(np.float64)
        results[v.video_id] = video_detections(vs, cas, att, v.duration, grid.snippet_seconds, icfg, label_of, offset)
        clusters[v.video_id] = int(vs.argmax())
    out = {"version": PREDICTIONS_VERSION, "results": results,
           "external_data": {"used": True, "details": "I3D (Kinetics), CLIP ViT-B/16, VGGish features"}}
    if utal:
        out["video_clusters"] = clusters
    return out


def write_predictions(pred: dict, path) -> None:
    ckpt.atomic_write_text(json.dumps(pred), path)

