"""`clipae store info|ls|verify PATH`: inspect a feature store."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect a feature store", description=__doc__)
    s = p.add_subparsers(dest="store_command", required=True)
    for name, helptext in (("info", "summary and fingerprint"), ("ls", "list videos with T and features"),
                           ("verify", "re-hash every feature and audio mask against its recorded sha256, check the time coordinate")):
        q = s.add_parser(name, help=helptext)
        q.add_argument("path")
        q.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import FeatureStore, StoreError, mixed_configs_message

    try:
        store = FeatureStore.open(args.path)
        if args.store_command == "info":
            summary = store.summary()
            print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
            mixed = (mixed_configs_message(store.feature_configs())  # (re-read only when there is a mix to name)
                     if not args.json and max(summary["configs_per_feature"].values(), default=1) > 1 else None)
            if mixed:  # (JSON readers have configs_per_feature)
                print("warning: features made in different ways across videos:\n  " + mixed.replace("\n", "\n  "),
                      file=sys.stderr)
            return 0
        if args.store_command == "ls":
            rows = [(v, store.num_snippets(v), sorted(store.features_of(v))) for v in store.list_videos()]
            if args.json:
                print(json.dumps([{"video": v, "T": t, "features": f} for v, t, f in rows]))
            else:
                for v, t, f in rows:
                    print(f"{v}\tT={t}\t{','.join(f)}")
            return 0
        mismatches = []
        store.recover()  # finish what killed writers left first: verify the store as readers will see it
        ids = store.list_videos()
        for vid in ids:  # features and audio mask against their recorded sha256, the time coordinate against the grid
            try:
                wrong = store.verify(vid)
            except Exception as e:  # noqa: BLE001 -- an unreadable chunk (bad codec data) is a finding, not a crash
                wrong = [f"unreadable: {e}"]
            for name in wrong:
                mismatches.append({"video": vid, "item": name})
                if not args.json:
                    print(f"MISMATCH {vid}/{name}")
        if args.json:
            print(json.dumps({"videos": len(ids), "mismatches": mismatches}))
        else:
            print(f"verified {len(ids)} videos, {len(mismatches)} mismatches")
        return 1 if mismatches else 0
    except StoreError as e:
        print(f"clipae store: error: {e}", file=sys.stderr)
        return 2
