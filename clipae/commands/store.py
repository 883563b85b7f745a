"""`clipae store info|ls|verify PATH`: inspect a feature store.

A video whose metadata cannot be read is reported as damaged (with its file and the problem) and the
rest of the store is still listed; the command then exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys

HELP = {
    "info": "summary and fingerprint; videos with unreadable metadata are listed as damaged_videos (exit 1)",
    "ls": "list videos with T and features; a video with unreadable metadata is listed as DAMAGED (exit 1)",
    "verify": "re-hash every feature and audio mask against its recorded sha256, check the time coordinate; "
              "each problem line says what is wrong (missing array or chunk file, wrong size, hash mismatch, "
              "time coordinate, unreadable metadata) and where (exit 1 on any)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect a feature store", description=__doc__)
    s = p.add_subparsers(dest="store_command", required=True)
    for name, helptext in HELP.items():
        q = s.add_parser(name, help=helptext, description=helptext)
        q.add_argument("path", help="feature store (the directory holding zarr.json)")
        q.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import FeatureStore, StoreError

    if not args.path.strip():  # (an unset $STORE: not the current directory)
        print(f"clipae store {args.store_command}: error: empty store path", file=sys.stderr)
        return 2
    try:
        store = FeatureStore.open(args.path)
        return {"info": _info, "ls": _ls, "verify": _verify}[args.store_command](store, args.json)
    except StoreError as e:
        print(f"clipae store {args.store_command}: error: {e}", file=sys.stderr)
        return 2


#: damaged videos named by `store info` (ls and verify list every one)
SHOWN_DAMAGED = 20


def _warn_damaged(damaged: dict[str, str], limit: int | None = None) -> None:
    items = list(damaged.items())
    for vid, why in items[:limit]:
        print(f"clipae store: damaged video {vid}: {why}", file=sys.stderr)
    if limit is not None and len(items) > limit:
        print(f"clipae store: ... {len(items)} damaged videos in all (`clipae store verify` lists every problem)",
              file=sys.stderr)


def _info(store, as_json: bool) -> int:
    from storage import mixed_configs_message

    summary = store.summary()
    print(json.dumps(summary, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items()
                                                                  if k != "damaged_videos"))
    mixed = (mixed_configs_message(store.feature_configs())  # (re-read only when there is a mix to name)
             if not as_json and max(summary["configs_per_feature"].values(), default=1) > 1 else None)
    if mixed:  # (JSON readers have configs_per_feature)
        print("warning: features made in different ways across videos:\n  " + mixed.replace("\n", "\n  "),
              file=sys.stderr)
    if summary["damaged_videos"] and not as_json:
        print(f"damaged videos: {len(summary['damaged_videos'])}")
    _warn_damaged(summary["damaged_videos"], SHOWN_DAMAGED)
    return 1 if summary["damaged_videos"] else 0


def _ls(store, as_json: bool) -> int:
    from storage import StoreDamageError, StoreError

    rows, damaged = [], {}
    for v in store.list_videos():
        try:
            rows.append({"video": v, "T": store.num_snippets(v), "features": sorted(store.features_of(v))})
        except StoreDamageError as e:  # listed, not fatal: the other videos are still worth seeing
            damaged[v] = str(e)
            rows.append({"video": v, "T": None, "features": [], "damaged": str(e)})
        except StoreError:  # (deleted since it was listed)
            continue
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['video']}\tDAMAGED\t{r['damaged']}" if "damaged" in r
                  else f"{r['video']}\tT={r['T']}\t{','.join(r['features'])}")
        if damaged:
            print(f"clipae store: {len(damaged)} damaged video(s); `clipae store verify` checks every array",
                  file=sys.stderr)
    return 1 if damaged else 0


def _verify(store, as_json: bool) -> int:
    mismatches = []
    store.recover()  # finish what killed writers left first: verify the store as readers will see it
    for item, detail in store.layout_problems().items():  # (what outside readers meet before any video)
        mismatches.append({"video": None, "item": item, "detail": detail})
        if not as_json:
            print(f"MISMATCH {item}: {detail}")
    ids = store.list_videos()
    for vid in ids:  # features and audio mask against their recorded sha256, the time coordinate against the grid
        try:
            wrong = store.verify_report(vid)
        except Exception as e:  # noqa: BLE001 -- anything unreadable is a finding, not a crash
            wrong = {"unreadable": f"{type(e).__name__}: {e}"}
        for item, detail in wrong.items():
            mismatches.append({"video": vid, "item": item, "detail": detail})
            if not as_json:
                print(f"MISMATCH {vid}/{item}: {detail}")
    if as_json:
        print(json.dumps({"videos": len(ids), "mismatches": mismatches}))
    else:
        print(f"verified {len(ids)} videos, {len(mismatches)} mismatches")
        if mismatches:
            print("to repair: `clipae extract` redoes missing arrays and unreadable metadata by itself; for other "
                  f"damage delete the video's directory ({store.path / 'videos'}/VIDEO) first, then run "
                  "`clipae extract` on it",
                  file=sys.stderr)
    return 1 if mismatches else 0
