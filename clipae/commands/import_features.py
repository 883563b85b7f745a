"""`clipae import-features`: bring BaS-Net/CASE, ActionFormer or generic npy features into a store."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-features", help="import community pre-extracted features into a Zarr store",
                       description=__doc__)
    p.add_argument("--layout", required=True, choices=["basnet", "actionformer", "generic"],
                   help="how --src is organised: BaS-Net/CASE's 25 fps I3D npy files, ActionFormer's THUMOS'14 "
                        "npy files, or one .npy (T, D) per video holding --feature")
    p.add_argument("--src", required=True, help="directory holding the .npy files")
    p.add_argument("--store", required=True, help="feature store path (created if absent)")
    p.add_argument("--feature", help="feature name for --layout generic (e.g. clip_vitb16, vggish)")
    p.add_argument("--dataset", help="dataset config (name or YAML): checks every annotated video is present")
    p.add_argument("--fps", type=float, help="snippet grid fps of the features (default: an existing store's, which must "
                   "then be the layout's for basnet/actionformer; for a new store the layout's: basnet 25, actionformer 30 (its THUMOS'14 features; with another --dataset that dataset's);"
                   " generic: the dataset's, else 25)")
    p.add_argument("--snippet-frames", type=int, help="frames per snippet (default as --fps: 16)")
    p.add_argument("--stride", type=int, help="snippet stride in frames (default as --fps: basnet 16, actionformer 4, "
                   "generic the dataset's, else 16)")
    p.add_argument("--codec", default="none", choices=["none", "blosc-lz4", "blosc-zstd", "zstd"],
                   help="chunk compression when the store is created (default: none, see BENCHMARKS.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage import FeatureStore, SnippetGrid, StoreError
    from storage.codecs import CodecSpec
    from storage.datasets import load_dataset
    from pathlib import Path

    from storage.importers import LAYOUT_GRIDS, discover, import_features
    from storage.schema import FEATURE_DIMS

    dataset = load_dataset(args.dataset) if args.dataset else None
    # Everything checkable is checked before a store is created for nothing: the dataset's annotations load,
    # the source holds files of the layout, the generic feature name is one the store holds, the grid values
    # are valid and fit the layout.
    if dataset is not None:
        dataset.videos()  # (annotations load lazily: a missing or malformed file fails here, not mid-import)
    found = discover(args.layout, Path(args.src), args.feature)
    existing = FeatureStore.open(args.store) if (Path(args.store) / "zarr.json").exists() else None
    known = existing.feature_dims if existing is not None else FEATURE_DIMS
    if args.layout == "generic" and args.feature not in known:
        raise StoreError(f"--feature {args.feature!r}: not a feature of {'this' if existing is not None else 'a'} store; "
                         f"choose one of {sorted(known)}")
    # ActionFormer's grid is that of its THUMOS'14 features; for another dataset the dataset's (the snippet
    # count check then says whether it fits).
    thumos = dataset is None or dataset.name == "thumos14"
    layout_grid = LAYOUT_GRIDS.get(args.layout) if (args.layout == "basnet" or thumos) else None
    explicit = any(v is not None for v in (args.fps, args.snippet_frames, args.stride))
    if existing is not None:
        base = existing.grid
        if layout_grid is not None and not explicit and existing.grid != layout_grid:
            # (imported as they were, the features would get this store's times: off by the grids' ratio)
            raise StoreError(
                f"store {args.store}: its grid ({existing.grid.fps:g} fps, {existing.grid.snippet_frames}-frame "
                f"snippets every {existing.grid.stride}) is not the {args.layout} features' ({layout_grid.fps:g} fps, "
                f"{layout_grid.snippet_frames}/{layout_grid.stride}): import them into another store, or give "
                "--fps/--snippet-frames/--stride when these files were made on this store's grid")
    else:
        base = layout_grid or (dataset.grid if dataset else SnippetGrid())
    pick = lambda given, default: default if given is None else given  # noqa: E731 -- (0 is refused, not defaulted)
    grid = SnippetGrid(fps=pick(args.fps, base.fps), snippet_frames=pick(args.snippet_frames, base.snippet_frames),
                       stride=pick(args.stride, base.stride))
    store_dir = Path(args.store)
    was_there = store_dir.exists()  # (a user's empty directory, maybe with hidden files: never removed)
    created = False
    store = None
    report = None
    try:
        if existing is None:
            try:
                store = FeatureStore.create(args.store, grid=grid, name=dataset.name if dataset else None,
                                            codec=CodecSpec(args.codec))
                created = True
            except StoreError:  # (created meanwhile by another process: use it, as open_or_create would)
                store = FeatureStore.open_or_create(args.store, grid=grid)
        else:
            store = FeatureStore.open_or_create(args.store, grid=grid)
        report = import_features(store, args.layout, args.src, args.feature, dataset, progress=not args.no_progress,
                                  found=found)
    except StoreError as e:
        print(f"clipae import-features: error: {e}", file=sys.stderr)
        return 2
    finally:
        # Nothing imported (every file failed, e.g. a wrong grid, or the import stopped): the store this command
        # created holds nothing and nobody is writing into it; a retry with other flags starts afresh.
        if created and _remove_if_empty(store, was_there) and report is not None:
            print(f"nothing imported: the new store {store.path} was removed")
    print(report.format())
    return 1 if report.failed else 0


def _remove_if_empty(store, was_there: bool) -> bool:
    """Remove a store this command created if it holds no video and nothing is being written into it: the whole
    directory when the command made it, else only what creating the store added."""
    import shutil

    try:
        if store.list_videos() or any((store.path / "_staging" / "tmp").iterdir()):
            return False
    except OSError:
        return False
    if not was_there:
        shutil.rmtree(store.path, ignore_errors=True)
        return True
    (store.path / "zarr.json").unlink(missing_ok=True)  # (first: no reader sees a store losing its parts)
    for name in ("videos", "_staging"):
        shutil.rmtree(store.path / name, ignore_errors=True)
    return True
