"""`clipae runs list|show|compare`: read the immutable run records under runs/."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from clipae.runs import RunRecord, default_runs_dir, find_run, list_runs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list, show and compare pipeline run records")
    parser.add_argument("--runs-dir", default=None, help="records root (default: $CLIPAE_RUNS_DIR or <repo>/runs)")
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION")
    lst = sub.add_parser("list", help="one line per run")
    lst.set_defaults(func=_list)
    show = sub.add_parser("show", help="a run's record and metrics")
    show.add_argument("run_id", help="flow-run id or a unique prefix (DATE/ID when one id is under two dates)")
    show.add_argument("--json", action="store_true", help="print record.json (non-finite numbers as null)")
    show.set_defaults(func=_show)
    cmp_ = sub.add_parser("compare", help="mAP per tIoU and differing settings, side by side")
    cmp_.add_argument("run_ids", nargs="+", help="run ids or unique prefixes (or DATE/ID)")
    cmp_.set_defaults(func=_compare)
    for action in (lst, show, cmp_):  # also after the action (`runs list --runs-dir X`); SUPPRESS keeps the outer value
        action.add_argument("--runs-dir", default=argparse.SUPPRESS, help="records root (as before the action)")
    parser.set_defaults(func=_list)


def _fmt_map(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _check_runs_dir(args: argparse.Namespace) -> None:
    """A typo in an explicit --runs-dir is an error, not "no run records"."""
    if args.runs_dir and not Path(args.runs_dir).is_dir():
        raise FileNotFoundError(f"--runs-dir {args.runs_dir}: "
                                f"{'not a directory' if Path(args.runs_dir).exists() else 'no such directory'}")


def _list(args: argparse.Namespace) -> int:
    _check_runs_dir(args)
    records = list_runs(args.runs_dir)
    if not records:
        print(f"no run records under {args.runs_dir or default_runs_dir()}")
        return 0
    print(f"{'date':<10}  {'run id':<36}  {'flow':<18}  {'dataset':<14}  {'status':<9}  {'avg mAP':>7}  {'store':<12}  "
          "revision")
    for r in records:
        d = r.data
        print(
            f"{r.date:<10}  {r.run_id:<36}  {str(d.get('flow', '-')):<18}  {str(d.get('dataset', '-')):<14}  "
            f"{str(d.get('status', '-'))[:9]:<9}  {_fmt_map(r.average_map):>7}  {str(d.get('store_fingerprint', '-'))[:12]:<12}  "
            f"{str(d.get('code_revision', '-'))[:12]}" + ("  (random-init features)" if d.get("random_init_features") else "")
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    _check_runs_dir(args)
    r = find_run(args.run_id, args.runs_dir)
    if args.json:  # (strict JSON: a non-finite metric becomes null, as parsers other than Python's require)
        print(json.dumps(_finite(r.data), indent=2, allow_nan=False))
        return 0
    d = r.data
    print(f"run        {r.run_id}  ({r.path})")
    for key in ("flow", "dataset", "status", "started", "published", "code_revision", "store_fingerprint"):
        print(f"{key:<10} {d.get(key, '-')}")
    if d.get("error"):  # (why a failed run failed)
        print(f"error      {d['error']}")
    # (what another tool or a hand edit wrote is shown as it is, not a traceback)
    timings = d.get("timings_s") if isinstance(d.get("timings_s"), dict) else {}
    if timings:
        print("timings    " + ", ".join(f"{k} {v:.1f}s" if isinstance(v, (int, float)) else f"{k} {v}"
                                        for k, v in timings.items()))
    failures = d.get("failures") if isinstance(d.get("failures"), list) else []
    print(f"failures   {len(failures)}" + "".join(
        f"\n  {f.get('video_id', '?')}: {f.get('error', '?')}" if isinstance(f, dict) else f"\n  {f}" for f in failures))
    if d.get("random_init_features"):
        print(f"RANDOM-INIT features {', '.join(map(str, d['random_init_features']))}: from randomly initialised networks "
              "(--allow-random-weights): not comparable with results on pretrained features")
    settings = _flatten(d.get("config") or {})
    if settings:
        print("settings\n" + "\n".join(f"  {k}: {json.dumps(v, default=str)}" for k, v in sorted(settings.items())))
    print(_map_table([r]))
    files = d.get("files")
    print("files      " + ", ".join(sorted(map(str, files)) if isinstance(files, (dict, list)) else "-"))
    return 0


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _map_table(records: list[RunRecord]) -> str:
    tious = sorted({t for r in records for t in r.map_by_tiou}, key=float)
    head = f"{'tIoU':<8}" + "".join(f"{r.run_id[:12]:>14}" for r in records)
    rows = [head]
    for t in tious:
        rows.append(f"{float(t):<8.2f}" + "".join(f"{_fmt_map(r.map_by_tiou.get(t)):>14}" for r in records))
    rows.append(f"{'avg':<8}" + "".join(f"{_fmt_map(r.average_map):>14}" for r in records))
    return "\n".join(rows)


def _flatten(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def _compare(args: argparse.Namespace) -> int:
    _check_runs_dir(args)
    records = [find_run(i, args.runs_dir) for i in args.run_ids]
    print(_map_table(records))
    if len({tuple(sorted(r.map_by_tiou)) for r in records}) > 1:
        print("\nnote: the runs were evaluated at different tIoU thresholds: their averages are not comparable")
    flats = [_flatten({"config": r.data.get("config", {}), "store_fingerprint": r.data.get("store_fingerprint"),
                       "code_revision": r.data.get("code_revision"), "flow": r.data.get("flow"),
                       "dataset": r.data.get("dataset"), "status": r.data.get("status"),
                       "random_init_features": r.data.get("random_init_features") or []}) for r in records]
    keys = sorted({k for f in flats for k in f})
    diffs = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    if diffs:
        print("\ndiffering settings:")
        for k in diffs:
            print(f"  {k}: " + " | ".join(json.dumps(f.get(k), default=str) for f in flats))
    else:
        print("\nsame settings")
    return 0
