"""`clipae demo generate`: synthesise the small demo video dataset (see clipae/demo_data.py)."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

from clipae import REPO_ROOT

# Where configs/datasets/demo.yaml and the demo deployment (prefect.yaml) read the demo dataset.
DEMO_DIR = str(REPO_ROOT / "demo_data")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="generate the self-made demo video dataset")
    sub = parser.add_subparsers(dest="demo_command", metavar="ACTION")
    gen = sub.add_parser("generate", help="write demo MP4s (H.264+AAC) and ActivityNet-style annotations")
    gen.add_argument("--out", default=DEMO_DIR, help="output directory (default: %(default)s)")
    gen.add_argument("--train-per-class", type=int, default=None, help="training videos per class (>= 1)")
    gen.add_argument("--test-per-class", type=int, default=None, help="test videos per class (>= 1)")
    gen.add_argument("--duration", type=float, default=None, help="seconds per video")
    gen.add_argument("--seed", type=int, default=None, help="random seed of the layout and content")
    gen.add_argument("--force", action="store_true", help="re-encode even if the same spec exists")
    gen.set_defaults(func=_generate)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _generate(args: argparse.Namespace) -> int:
    from clipae.demo_data import DemoSpec, generate_demo_dataset

    spec = DemoSpec()
    overrides = {
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "duration": args.duration,
        "seed": args.seed,
    }
    for name in ("train_per_class", "test_per_class"):
        if overrides[name] is not None and overrides[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {overrides[name]}")
    spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    ann = generate_demo_dataset(args.out, spec, force=args.force)
    db = json.loads(ann.read_text())["database"]
    print(f"demo dataset: {len(db)} videos in {ann.parent / 'videos'}; annotations: {ann}")
    return 0
