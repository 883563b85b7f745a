"""Plots and run-record contents of one extract-and-train run (shared by the flow and direct runs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clipae.runs import RunRecordWriter, code_revision
from flows import plots


def attention_curves(checkpoint, store, dataset, subset: str, video_ids: list[str], device: str):
    """Per-snippet foreground attention of the trained model (mean of its two streams) for a few videos.

    Returns {vid: (snippet centre times, attention)}; {} when the model cannot provide them.
    """
    if not video_ids:
        return {}
    from models.data import load_videos, prepare
    from models.network import ClipAENet, required_features
    from models.predict import load_model
    from models.runtime import forward_full

    model, _meta, cfg = load_model(checkpoint, device)
    names = required_features(cfg)
    videos = load_videos(store, dataset, subset, names, video_ids)
    items = [prepare(v, names) for v in videos]

    def pick(outs, mask):
        att = ClipAENet.fused_scores(outs, mask)["attention"]
        return [att[i, : int(n)].float().cpu().numpy() for i, n in enumerate(mask.sum(1).tolist())]

    curves = forward_full(model, items, next(model.parameters()).device, False, pick)
    grid = store.grid
    out = {}
    for v, a in zip(videos, curves):
        times = [grid.snippet_center_seconds(i) for i in range(len(a))]
        out[v.video_id] = (times, a)
    return out


def build_plots(dataset, predictions: dict, map_by_tiou: dict[float, float], videos: list[str], n: int,
                curves: dict | None = None) -> dict[str, bytes]:
    """``map_vs_tiou.png`` plus activation-vs-ground-truth plots for the first ``n`` videos."""
    out = {"map_vs_tiou.png": plots.map_vs_tiou_png(list(map_by_tiou), list(map_by_tiou.values()),
                                                     f"{dataset.name}: mAP vs tIoU")}
    results = predictions.get("results", {})
    for vid in [v for v in videos if v in results][:n]:
        ann = dataset.annotations(vid)
        gt = [(s.start, s.end, s.label) for s in ann.segments]
        curve = (curves or {}).get(vid)
        out[f"activation_{vid}.png"] = plots.activation_png(vid, ann.duration, gt, results[vid], curve)
    return out


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj


def fill_record(
    writer: RunRecordWriter,
    *,
    params: dict,
    extract_config: Any,
    training_config: Any,
    plan: Any,
    reports: list[dict],
    failures: list[dict],
    check: Any,
    train_result: Any,
    predictions: dict | None,
    evaluation: Any,
    evaluation_table: str | None,
    plot_pngs: dict[str, bytes],
) -> None:
    """Everything except record.json (written by :meth:`RunRecordWriter.publish`)."""
    writer.write_json("config.json", {
        "params": params,
        "extract_config": _plain(extract_config),
        "training_config": _plain(training_config),
    })
    writer.write_json("extraction.json", {"plan": _plain(plan), "reports": reports, "failures": failures})
    if check is not None:
        writer.write_json("store_check.json", _plain(check))
    if train_result is not None:  # paths inside the staging dir become record-relative
        writer.write_json("training.json", {
            k: (relative_to(Path(v), writer.path) if isinstance(v, (str, Path)) and str(v).startswith(str(writer.path))
                else v)
            for k, v in _plain(train_result).items()
        })
    if predictions is not None:
        writer.write_json("predictions.json", predictions)
    if evaluation is not None:
        writer.write_json("metrics.json", _plain(evaluation))
    if evaluation_table:
        writer.write_bytes("metrics.txt", evaluation_table.encode())
    for name, png in plot_pngs.items():
        writer.write_bytes(f"plots/{name}", png)


def record_summary(
    flow: str, dataset: str, status: str, params: dict, check: Any, map_by_tiou: dict[float, float] | None,
    average_map: float | None, failures: list[dict], timings: dict[str, float], error: str | None = None,
) -> dict:
    """The record.json body (``clipae runs`` reads these keys)."""
    return {
        "flow": flow,
        "dataset": dataset,
        "status": status,
        "error": error,
        "code_revision": code_revision(),
        "store_fingerprint": getattr(check, "fingerprint", None),
        "config": params,
        "metrics": {
            "map_by_tiou": {f"{t:.2f}": m for t, m in (map_by_tiou or {}).items()},
            "average_map": average_map,
        },
        "failures": failures,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def relative_to(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
