"""Demo accuracy vs chance (issue 5: "the demo must still localize far better than chance").

Trains on the demo store (made by `deploy/demo.sh` or `clipae extract` with the demo settings) with the
`extract-and-train/demo` training settings from prefect.yaml (full CLIP-AE) and, for comparison, the
two-stream baseline (CAF, CCP and L_self off); several seeds each. References on the same test videos: random segments and whole-video
predictions, both given the TRUE labels (so they are generous "chance" levels).

    .venv/bin/python bench/bench_demo_accuracy.py [--store stores/demo.zarr] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(REPO / "stores" / "demo.zarr"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--arrangements", action="store_true",
                    help="also train the full model without the LayerNorm after CAF, and with CAF and CCP in series")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from flows.params import TrainingOptions
    from models.data import load_videos
    from models.network import required_features
    from models.predict import predict
    from models.scoring import evaluate_predictions, random_segment_predictions, whole_video_predictions
    from models.train import train
    from storage import FeatureStore
    from storage.datasets import load_dataset

    ds = load_dataset("demo")
    store = FeatureStore.open(args.store)
    demo = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    assert demo["name"] == "demo"
    demo_cfg = TrainingOptions(**demo["parameters"]["training"]).build("cpu")
    base_cfg = demo_cfg.replace(switches={"caf": False, "ccp": False, "selfsup": False})
    test_v = load_videos(store, ds, ds.test_subset, required_features(demo_cfg))
    def random_clusters(seed: int) -> dict:
        """Chance for UTAL: random segments AND a random cluster per video (mapped by Hungarian like ours)."""
        rng = np.random.default_rng(seed)
        pred = random_segment_predictions(test_v, ds.classes, seed=seed)
        clusters = {v: int(rng.integers(len(ds.classes))) for v in pred["results"]}
        for v, dets in pred["results"].items():
            for d in dets:
                d["label"] = f"cluster_{clusters[v]}"
        return {**pred, "video_clusters": clusters}

    refs = {
        "chance: random segments + random clusters, 20 draws": float(np.mean([
            evaluate_predictions(random_clusters(s), ds).average_mAP for s in range(20)])),
        "random segments (true labels), 5 draws": float(np.mean([
            evaluate_predictions(random_segment_predictions(test_v, ds.classes, seed=s), ds).average_mAP
            for s in range(5)])),
        "whole video (true labels)": evaluate_predictions(whole_video_predictions(test_v, ds.classes), ds).average_mAP,
    }
    rows: dict[str, list[float]] = {}
    variants = [("demo deployment settings (full CLIP-AE)", demo_cfg),
                ("two-stream baseline (CAF, CCP, L_self off)", base_cfg)]
    if args.arrangements:  # CAF and CCP side by side (the paper, the default) vs in series (before 2026-12-04)
        variants += [("full CLIP-AE without the LayerNorm after CAF", demo_cfg.replace(model={"caf_out_norm": False})),
                     ("full CLIP-AE, CAF and CCP in series", demo_cfg.replace(model={"caf_ccp": "series"}))]
    for name, cfg in variants:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                c = cfg.replace(train={"seed": seed, "progress": False})
                res = train(c, store, ds, Path(tmp))
                pred = predict(res.checkpoint, store, ds, subset=ds.test_subset)
                rows.setdefault(name, []).append(evaluate_predictions(pred, ds).average_mAP)
        print(name, [round(100 * x, 1) for x in rows[name]], flush=True)
    out = {"date": str(date.today()), "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
           "command": "python " + " ".join(sys.argv), "store": args.store, "seeds": args.seeds,
           "average_mAP": rows, "references": refs}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
