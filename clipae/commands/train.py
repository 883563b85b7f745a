"""`clipae train`: train CLIP-AE (UTAL by default, or weakly supervised) on a feature store."""
from __future__ import annotations

import argparse
import sys

from clipae.commands._model_args import add_config_args, config_from_args, open_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train the CLIP-AE localizer (UTAL or weakly supervised)")
    p.add_argument("--store", required=True, help="feature store path")
    p.add_argument("--dataset", required=True, help="dataset name (configs/datasets) or YAML path")
    p.add_argument("--out", default="runs/clipae", help="run directory (checkpoints, config, logs)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    add_config_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from models.train import train

    cfg = config_from_args(args)
    store, ds = open_inputs(args.store, args.dataset)
    inputs = _inputs(store, ds, cfg)  # (before training: a store it cannot describe fails now, not after the schedule)
    from pathlib import Path

    from models import checkpoint as ckpt

    previous = [n for n in (ckpt.MODEL_FILE, ckpt.RESUME_FILE) if (Path(args.out) / n).exists()]
    if previous and not (args.resume and (Path(args.out) / ckpt.RESUME_FILE).exists()):
        print(f"clipae train: {args.out} holds a previous run ({', '.join(previous)}): this run replaces it "
              "(--resume would continue it)", file=sys.stderr)
    res = train(cfg, store, ds, args.out, resume=args.resume)
    after = store.fingerprint()
    if after != inputs["store_fingerprint"]:  # another process wrote videos while this run read them
        inputs["store_fingerprint_after"] = after
        print("clipae train: warning: the store changed while training read it (another process wrote videos); "
              "inputs.json records its fingerprint before and after", file=sys.stderr)
    _write_inputs(res.out_dir, inputs)
    print(f"trained {res.mode} ({cfg.switches.describe()}): {res.epochs_completed} epochs in {res.seconds:.0f} s -> {res.checkpoint}")
    for ch in res.cluster_history:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"  round {ch['round']}: inertia {ch['inertia']:.2f} changed {fmt(ch['changed'])} purity {fmt(ch['purity'])}")
    return 0


def _inputs(store, ds, cfg) -> dict:
    """What the model is trained on: the store (path, fingerprint) and its features' provenance summary, so a
    run directory says whether its features were real or random-init."""
    from pathlib import Path

    from models.data import feature_configs
    from models.network import required_features

    names = [n for n in required_features(cfg) if n in store.feature_dims]
    present = set(store.list_videos())
    vids = [v for v in ds.videos(ds.train_subset) if v in present]
    random_init: set[str] = set()
    feature_configs(store, vids, names, random_init)
    return {"store": str(Path(store.path).resolve()), "store_fingerprint": store.fingerprint(), "dataset": ds.name,
            "subset": ds.train_subset, "videos": len(vids), "features": names,
            "random_init_features": sorted(random_init)}


def _write_inputs(out_dir, inputs: dict) -> None:
    """``inputs.json`` beside the checkpoint."""
    import json
    from pathlib import Path

    (Path(out_dir) / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
