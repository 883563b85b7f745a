"""`clipae predict`: ActivityNet-format detections of a trained checkpoint."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="localize actions with a trained checkpoint")
    p.add_argument("--checkpoint", required=True, help="run directory or model.pt")
    p.add_argument("--store", required=True, help="feature store path")
    p.add_argument("--dataset", required=True, help="dataset name (configs/datasets) or YAML path")
    p.add_argument("--subset", default=None, help="default: the dataset's test subset")
    p.add_argument("--out", required=True, help="predictions JSON path")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from clipae.commands._model_args import open_inputs
    from clipae.commands._output import check_output_file
    from models.predict import predict, write_predictions

    check_output_file(args.out, "--out")
    store, ds = open_inputs(args.store, args.dataset)
    pred = predict(args.checkpoint, store, ds, args.subset, device=args.device)
    write_predictions(pred, args.out)
    n = sum(len(v) for v in pred["results"].values())
    print(f"{n} detections for {len(pred['results'])} videos -> {args.out}")
    return 0
