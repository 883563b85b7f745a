"""`clipae ablate`: train the component grid and write a CLIP-AE Table 3 style table (markdown + JSON).

On a real store: ``clipae ablate --store S --dataset thumos14 --out runs/ablation``.
On the synthetic THUMOS-structured features (models/synthetic.py): ``--synthetic [--synthetic-videos N]``.
"""
from __future__ import annotations

import argparse

from clipae.commands._model_args import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ablate", help="train the CAF / CCP / self-sup ablation grid and tabulate mAP")
    p.add_argument("--store", default=None, help="feature store path (or --synthetic)")
    p.add_argument("--dataset", default="thumos14", help="dataset name or YAML path (default: %(default)s)")
    p.add_argument("--out", default="runs/ablation", help="output directory (default: %(default)s)")
    p.add_argument("--rows", default=None, help="comma-separated rows (default: baseline,caf,ccp,caf+ccp,caf+ccp-selfsup)")
    p.add_argument("--resume", action="store_true", help="resume rows from their last.pt")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                   help="train every row with each of these seeds and report mean ± std per row "
                        "(default: the one --seed / config seed); --synthetic data stay those of --seed")
    p.add_argument("--synthetic", action="store_true", help="use synthetic features in memory instead of a store")
    p.add_argument("--synthetic-videos", type=int, default=0, help="videos per subset (0: all)")
    p.add_argument("--synthetic-dims", choices=["small", "full"], default="small",
                   help="--synthetic feature widths: the real ones (full) or narrow, for speed (default: %(default)s)")
    p.add_argument("--same-cluster-input", action="store_true",
                   help="UTAL: every row clusters on train.cluster_features (CLIP included) whatever its switches, "
                        "so rows differ only in their modules, not in their pseudo-labels")
    add_config_args(p, switches=False)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from models.ablation import run_ablation
    from storage.datasets import load_dataset

    cfg = config_from_args(args)
    if args.same_cluster_input:
        cfg = cfg.replace(train={"cluster_features_follow_switches": False})
    ds = load_dataset(args.dataset)
    rows = [r.strip() for r in args.rows.split(",")] if args.rows is not None else None
    if rows is not None and not all(rows):  # (--rows "" silently ran the whole default grid)
        raise ValueError(f"--rows {args.rows!r}: an empty row name; give comma-separated rows, e.g. baseline,caf")
    train_v = test_v = None
    refs = {}
    if args.synthetic:
        from models.scoring import random_segment_predictions, whole_video_predictions
        from models.synthetic import synthetic_problem

        store, train_v, test_v = synthetic_problem(ds, args.synthetic_dims, args.synthetic_videos, seed=cfg.train.seed)
        refs = {"ref: whole video (true labels)": whole_video_predictions(test_v, ds.classes),
                "ref: random segments (true labels)": random_segment_predictions(test_v, ds.classes)}
    elif args.store:
        from storage import FeatureStore

        store = FeatureStore.open(args.store)
    else:
        raise ValueError("give --store PATH or --synthetic")
    results = run_ablation(cfg, store, ds, args.out, rows, train_v, test_v, refs, resume=args.resume, seeds=args.seeds)
    print(open(f"{args.out}/ablation.md").read())
    return 0 if results else 1
