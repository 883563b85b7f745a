"""`clipae evaluate`: ActivityNet-style detection mAP of a predictions JSON (logic in models.evaluation)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="detection mAP of predictions against ActivityNet-format ground truth",
        description=(
            "ActivityNet detection mAP per tIoU threshold and averaged. UTAL predictions "
            "(labels cluster_<k>) are mapped to classes first and the clustering NMI/ARI reported. "
            "Without --dataset: all GT videos, thresholds 0.1:0.1:0.7 if the GT version names THUMOS "
            "else 0.5:0.05:0.95, no Ambiguous filtering."
        ),
    )
    p.add_argument("--gt", type=Path, help="ground truth JSON (default with --dataset: the dataset's annotations)")
    p.add_argument("--pred", type=Path, required=True, help="predictions JSON {'results': {vid: [...]}}")
    p.add_argument("--dataset", help="thumos14 | activitynet12 | PATH.yaml: defaults for subset, thresholds, Ambiguous")
    p.add_argument("--subset", help="GT subset to evaluate, e.g. Test or validation (case-insensitive)")
    p.add_argument("--tiou", type=float, nargs="+", metavar="T", help="tIoU thresholds")
    amb = p.add_mutually_exclusive_group()
    amb.add_argument("--ambiguous", type=Path, metavar="FILE", help="drop predictions overlapping these segments")
    amb.add_argument("--no-ambiguous", action="store_true", help="no Ambiguous filtering even if the dataset has a list")
    p.add_argument("--mapping", choices=("hungarian", "majority"), default="hungarian",
                   help="cluster -> class mapping for cluster_<k> predictions (default hungarian)")
    p.add_argument("--ignore-outside-videos", action="store_true",
                   help="drop predictions of videos outside the evaluated GT videos (official: false positives)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every number to this JSON file")
    p.set_defaults(func=run)


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:  # (name the file: two JSON inputs)
        raise ValueError(f"{what} {path}: not valid JSON ({e})") from None


def run(args: argparse.Namespace) -> int:
    from models.evaluation import evaluate_detection, parse_predictions

    if args.json is not None:  # (checked before the work, not after it)
        from clipae.commands._output import check_output_file

        check_output_file(args.json, "--json")
    subset, thresholds, ambiguous, gt = args.subset, args.tiou, None, None
    if args.dataset:
        # Imported lazily: only --dataset needs the dataset configs.
        from storage.datasets import load_dataset

        ds = load_dataset(args.dataset)
        subset = subset or ds.test_subset
        thresholds = thresholds or list(ds.tiou_thresholds)
        if not args.no_ambiguous and args.ambiguous is None:
            ambiguous = ds.ambiguous() or None
        if args.gt is None:
            gt = ds.ground_truth_json()
    if args.ambiguous is not None:
        ambiguous = args.ambiguous
    if gt is None:
        if args.gt is None:
            print("clipae evaluate: error: --gt is required without --dataset", file=sys.stderr)
            return 2
        gt = _read_json(args.gt, "ground truth")
    pred = _read_json(args.pred, "predictions")
    try:
        pred = parse_predictions(pred)
    except ValueError as exc:  # (parsed here so that the message names the file)
        raise ValueError(f"{args.pred}: {exc}") from None

    try:
        result = evaluate_detection(
            gt, pred, subset=subset, tiou_thresholds=thresholds, ambiguous=ambiguous,
            mapping=args.mapping, ignore_outside_videos=args.ignore_outside_videos,
        )
    except ValueError as exc:  # bad input files: one clear line, not a traceback
        print(f"clipae evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(result.format_table())
    if result.counts.get("outside_videos"):
        print(f"warning: {result.counts['outside_videos']} predictions are for videos outside the evaluated "
              "subset and count as false positives (use --ignore-outside-videos to drop them)", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(result.to_json() + "\n")
        print(f"wrote {args.json}")
    return 0
