"""`clipae extract`: decode videos once and write I3D RGB/flow, CLIP and VGGish features to a store.

Videos already complete in the store with the same extractor config are skipped; for the
others only missing or outdated features are computed. Exits 1 if any video failed (each
failure is listed with its file, stage and reason), 2 on a usage/configuration error, 130 when
interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys

from extractors.config import ALL_FEATURES, PRECISIONS, ExtractConfig, config_from_dict, load_config_file
from extractors.errors import ConfigError

EPILOG = """\
--videos takes a directory (its video files; id = file name without extension), one video
file, a quoted glob, or a manifest: text/CSV lines 'video_id,path' (or just 'path'), or JSON [{"video_id","path"}]
/ {id: path}; relative paths are relative to the manifest. See docs/extraction.md.
--config takes a YAML/JSON file of extraction settings (extractors.config.ExtractConfig
fields; nested 'tvl1' and 'clip' mappings), e.g. a small crop for quick checks.
"""


def register(subparsers) -> None:
    from extractors.weights import add_weights_dir_argument

    p = subparsers.add_parser(
        "extract", help="extract I3D/flow/CLIP/VGGish features of videos into a feature store",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--videos", required=True, metavar="DIR|VIDEO|GLOB|MANIFEST",
                   help="directory of videos, one video file, a quoted glob, or a manifest file")
    p.add_argument("--store", required=True, metavar="PATH", help="feature store (created if missing)")
    p.add_argument("--features", default=None, metavar="LIST",
                   help=f"comma-separated subset of {','.join(ALL_FEATURES)} (default: all)")
    add_weights_dir_argument(p)
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]",
                   help="default: auto (the first CUDA device if there is one)")
    p.add_argument("--allow-random-weights", action="store_true", default=None,
                   help="use randomly initialised networks where a weights file is missing (recorded in provenance)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the snippet grid (default: the store's, or 25 for a new store)")
    p.add_argument("--batch-size", type=int, default=None, help="snippets per network forward pass")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="GPU autocast policy (default: auto)")
    p.add_argument("--decode-backend", default=None, choices=["auto", "decord", "ffmpeg"],
                   help="auto: decord, ffmpeg where decord cannot be trusted or fails (default: auto)")
    p.add_argument("--video-workers", type=int, default=None, metavar="N",
                   help="videos decoded at once (default 1); >1 keeps a GPU busy while the CPU decodes")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML/JSON file of extraction settings")
    p.add_argument("--recursive", action="store_true", help="search the video directory recursively")
    p.add_argument("--name", default=None, help="dataset name when the store is created")
    p.add_argument("--shard", default=None, metavar="I/N", type=_shard,
                   help="extract only this process's share of the videos (by a hash of their ids), e.g. 0/2 and "
                        "1/2 in two processes, one per GPU, on the same videos and store")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _shard(text: str) -> tuple[int, int]:
    from extractors.manifest import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _build_config(args, store_grid) -> ExtractConfig:
    overrides = {
        "features": args.features, "weights_dir": args.weights_dir, "device": args.device,
        "allow_random_weights": args.allow_random_weights, "batch_size": args.batch_size,
        "precision": args.precision, "decode_backend": args.decode_backend,
        "video_workers": args.video_workers,
    }  # fmt: skip
    if store_grid is not None:
        if args.fps is not None and abs(args.fps - store_grid.fps) > 1e-9:
            raise ConfigError(f"--fps {args.fps:g} differs from the store's grid ({store_grid.fps:g} fps)")
        overrides.update(fps=store_grid.fps, snippet_frames=store_grid.snippet_frames, stride=store_grid.stride)
    else:
        overrides["fps"] = args.fps
    if args.config is None:
        return config_from_dict({}, **overrides)
    if store_grid is not None:  # (the store's grid overrides the file's below: a file that says another is refused)
        from extractors.config import read_config_file

        grid = {"fps": store_grid.fps, "snippet_frames": store_grid.snippet_frames, "stride": store_grid.stride}
        wrong = {k: v for k, v in read_config_file(args.config).items() if k in grid and v != grid[k]}
        if wrong:
            raise ConfigError(f"--config {args.config}: {', '.join(f'{k}: {v}' for k, v in wrong.items())} differs from "
                              f"the store's grid ({store_grid.fps:g} fps, {store_grid.snippet_frames}-frame snippets "
                              f"every {store_grid.stride})")
    return load_config_file(args.config, **overrides)


def run(args) -> int:
    import time
    from pathlib import Path

    from extractors.manifest import ManifestError, discover_videos, in_shard
    from extractors.pipeline import Extractors
    from extractors.weights import WeightsError
    from storage import FeatureStore, SnippetGrid, StoreError

    try:
        for flag, value in (("--videos", args.videos), ("--store", args.store), ("--config", args.config)):
            if value is not None and not str(value).strip():  # (an unset $VAR: not the current directory)
                raise ConfigError(f"{flag}: empty path")
        videos = discover_videos(args.videos, recursive=args.recursive)
        if args.shard:
            listed = len(videos)
            videos = [v for v in videos if in_shard(v[0], *args.shard)]
            print(f"shard {args.shard[0]}/{args.shard[1]}: {len(videos)} of the {listed} videos", file=sys.stderr)
        existing = FeatureStore.open(args.store) if (Path(args.store) / "zarr.json").exists() else None
        config = _build_config(args, existing.grid if existing is not None else None)  # (an empty store is falsy)
        # Weights first (every missing file in one message), before a new store is created.
        models = Extractors(config)
        if models.random_init_features:  # (said up front: a long run should not reveal it only at its end)
            print(f"note: no weights file for {', '.join(models.random_init_features)}: with --allow-random-weights, "
                  "what this run extracts of them comes from randomly initialised networks", file=sys.stderr)
        if existing is not None:
            existing.recover()  # what killed runs left (a video caught between two renames comes back)
        store = existing if existing is not None else FeatureStore.open_or_create(
            args.store, grid=SnippetGrid(config.fps, config.snippet_frames, config.stride), name=args.name
        )
        t0 = time.perf_counter()
        results = _run_with_progress(videos, store, config, models, progress=not args.no_progress)
        wall = time.perf_counter() - t0
    except (ConfigError, ManifestError, WeightsError, StoreError) as e:
        print(f"clipae extract: error: {e}", file=sys.stderr)
        return 2
    # (after the run: a run that only skips complete videos computed nothing with them)
    made = sorted({f for r in results for f in getattr(r, "computed", ())} & set(models.random_init_features))
    if made:
        print(f"note: randomly initialised networks for {', '.join(made)} "
              "(--allow-random-weights; no weights file found): these are not pretrained features, and the "
              "store records them as random_init", file=sys.stderr)
    return _print_summary(results, store, wall, config.features)


def _run_with_progress(videos, store, config, models, progress: bool):
    """An overall bar, and one bar per video in flight (up to ``video_workers`` at once, each on its own line)."""
    import threading

    from tqdm import tqdm

    from extractors.pipeline import extract_many

    overall = tqdm(total=len(videos), desc="videos", unit="video", disable=not progress, position=0)
    bars: dict[str, tuple[tqdm, int]] = {}
    free = list(range(1, max(1, min(config.video_workers, len(videos))) + 1))  # screen lines below the overall bar
    lock = threading.Lock()

    def start(vid, path):
        with lock:
            line = free.pop(0) if free else len(bars) + 1
            bars[vid] = (tqdm(desc=vid[:30], unit="snippet", leave=False, disable=not progress, position=line), line)

    def progress_of(vid):
        def step(done, total):
            bar = bars.get(vid, (None, 0))[0]
            if bar is not None:
                if total and bar.total != max(total, done):
                    bar.total = max(total, done)
                bar.n = done
                bar.refresh()
        return step

    def done(res):
        with lock:
            bar, line = bars.pop(res.video_id, (None, 0))
            if bar is not None:
                bar.close()
                free.append(line)
                free.sort()
        overall.update(1)
        if not res.ok:
            tqdm.write(f"FAILED {res.video_id}: {res.error}", file=sys.stderr)

    try:
        return extract_many(videos, store, config, models, on_video_start=start, on_video_done=done,
                            video_progress=progress_of)
    finally:
        for bar, _ in list(bars.values()):
            bar.close()
        overall.close()


def _print_summary(results, store, wall_seconds: float, features=None) -> int:
    """Counts, and the run's throughput: frames extracted / wall time of the whole run (model loading
    included). Not per-video time summed: with --video-workers N the videos overlap."""
    from extractors.pipeline import summarize
    from storage import mixed_configs_message

    s = summarize(results)
    rate = f", {s['frames'] / wall_seconds:.1f} frames/s over {wall_seconds:.1f} s" \
        if s["frames"] and wall_seconds > 0 else ""
    print(f"store {store.path}: {s['videos']} videos: {s['extracted']} extracted ({s['snippets']} snippets"
          f"{rate}), {s['skipped']} already complete, {s['failed']} failed")
    partial = [r for r in results if r.ok and r.computed and r.reused]
    for r in partial:
        print(f"  {r.video_id}: computed {','.join(r.computed)}; kept {','.join(r.reused)}")
    for r in results:
        if r.ok and r.replaced_source:
            print(f"  {r.video_id}: replaced everything stored for it: its source changed (was {r.replaced_source})")
        if r.ok and getattr(r, "repaired_damage", None):
            print(f"  {r.video_id}: its stored entry was damaged ({r.repaired_damage}): extracted again from the source")
    mixed = mixed_configs_message(store.feature_configs(), features)
    if mixed:  # e.g. other TV-L1 settings or weights than earlier runs: a model would mix them unknowingly
        print("warning: features in this store were made in different ways; run this command on the other "
              "videos too (their features are redone with this run's settings), or use a separate store:\n  "
              + mixed.replace("\n", "\n  "), file=sys.stderr)
    failures = [r for r in results if not r.ok]
    if failures:
        print("failures:")
        for r in failures:
            print(f"  {r.video_id}: {r.path}: {r.stage}: {r.reason}")
        return 1
    return 0
