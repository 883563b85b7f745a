"""Benchmark: a full CLIP-AE UTAL run on THUMOS'14-sized synthetic features (412 videos, full dims),
and optionally the component ablation grid on the same data.

    .venv/bin/python bench/bench_train.py                       # full UTAL run (default config)
    .venv/bin/python bench/bench_train.py --rounds 1 --epochs 2 # a quick timing sample
    .venv/bin/python bench/bench_train.py --ablation --dims small --out runs/bench_ablation
    .venv/bin/python bench/bench_train.py --ablation --rounds 2 --epochs 4 --seeds 0 1 2   # mean ± std per row

Prints and writes (``--json``) wall times per phase, mAP per tIoU and two trivial reference predictors
measured on the same test videos in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", choices=["full", "small"], default="full")
    ap.add_argument("--videos-per-subset", type=int, default=0, help="0: all 200 + 212 THUMOS videos")
    ap.add_argument("--mode", choices=["utal", "weak"], default="utal")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: see BENCHMARKS.md, 2 threads on the shared 2-core box are 3-6x slower)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ablation", action="store_true", help="run the ablation grid instead of one run")
    ap.add_argument("--rows", default=None, help="--ablation: comma-separated rows (default: models.ablation.DEFAULT_ROWS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                    help="--ablation: training seeds; each row is trained once per seed and reported as mean ± std "
                         "(the synthetic data are the same for every seed)")
    ap.add_argument("--out", default="runs/bench_train")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config field, e.g. --set train.lr=0.001 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from models.ablation import format_markdown, run_ablation
    from models.config import load_config
    from models.predict import predict
    from models.scoring import evaluate_predictions, random_segment_predictions, whole_video_predictions
    from models.synthetic import synthetic_problem
    from models.train import train
    from storage.datasets import load_dataset

    ds = load_dataset("thumos14")
    cfg = load_config()
    tr = {"mode": args.mode, "device": args.device, "num_threads": args.threads, "progress": False}
    if args.rounds is not None:
        tr["rounds"] = args.rounds
    if args.epochs is not None:
        tr["epochs_per_round" if args.mode == "utal" else "weak_epochs"] = args.epochs
    cfg = cfg.replace(train=tr)
    for item in args.set:
        key, value = item.split("=", 1)
        section, field_ = key.split(".", 1)
        cfg = cfg.replace(**{section: {field_: yaml.safe_load(value)}})
    rec: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                 "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 "load_average_start": os.getloadavg(), "config": cfg.to_dict(), "dims": args.dims}

    t0 = time.perf_counter()
    store, train_v, test_v = synthetic_problem(ds, args.dims, args.videos_per_subset)
    rec["videos"] = {"train": len(train_v), "test": len(test_v),
                     "snippets": sum(v.num_snippets for v in store.videos())}
    rec["seconds_synthesize"] = time.perf_counter() - t0
    refs = {"ref: whole video (true labels)": whole_video_predictions(test_v, ds.classes),
            "ref: random segments (true labels)": random_segment_predictions(test_v, ds.classes)}
    out = Path(args.out)

    if args.ablation:
        t0 = time.perf_counter()
        rows = run_ablation(cfg, store, ds, out, args.rows.split(",") if args.rows else None, train_v, test_v, refs,
                            seeds=args.seeds)
        rec["seconds_ablation"] = time.perf_counter() - t0
        rec["ablation"] = [r.__dict__ for r in rows]
        print(format_markdown(rows))
    else:
        t0 = time.perf_counter()
        res = train(cfg, store, ds, out, videos=train_v)
        rec["seconds_train"] = time.perf_counter() - t0
        rec["epochs"] = res.epochs_completed
        rec["cluster_history"] = res.cluster_history
        t0 = time.perf_counter()
        pred = predict(res.checkpoint, store, ds, videos=test_v, device=args.device)
        rec["seconds_predict"] = time.perf_counter() - t0
        ev = evaluate_predictions(pred, ds)
        rec["mAP"] = dict(zip(map(str, ev.tiou), ev.mAP))
        rec["average_mAP"] = ev.average_mAP
        rec["references"] = {n: evaluate_predictions(p, ds).average_mAP for n, p in refs.items()}
    rec["load_average_end"] = os.getloadavg()
    print(json.dumps({k: v for k, v in rec.items() if k not in ("config", "ablation")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
