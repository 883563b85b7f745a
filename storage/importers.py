"""Bring community pre-extracted features into a store (`clipae import-features`).

Layouts (and the snippet grid their published THUMOS'14 features use, the default for a new store):
* ``basnet``       BaS-Net / CASE: ``<src>/{train,test}/{rgb,flow}/<video>.npy``, each (T, 1024);
                   videos resampled to 25 fps, 16-frame snippets, stride 16
* ``actionformer`` ``<src>/<video>.npy``, (T, 2048) = RGB ‖ flow; each video at its own frame rate (30 fps for
                   most of THUMOS'14), 16-frame windows, stride 4. ``v_<id>.npy`` (its ActivityNet naming) is
                   read as ``<id>`` when only that is annotated.
* ``generic``      ``<src>/<video>.npy`` of one feature (e.g. CLIP or audio), named with ``feature=``

With a dataset, every video's snippet count is checked against its annotated duration on the store's grid:
features made on another grid (or, for ActionFormer, a video at another frame rate: 25 fps THUMOS'14 videos
on the 30 fps grid) would otherwise get times off by the ratio, silently.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from storage.datasets import DatasetConfig
from storage.grid import SnippetGrid
from storage.schema import AUDIO_MASK, FeatureProvenance, StoreError, VideoInfo, validate_video_id
from storage.store import FeatureStore, StoreConflict

LAYOUTS = ("basnet", "actionformer", "generic")
IMPORTER_VERSION = "1"
#: The grid of each layout's published THUMOS'14 I3D features (BaS-Net: 25 fps, 16/16; ActionFormer: the
#: videos' own 30 fps, 16-frame windows every 4 frames).
LAYOUT_GRIDS = {"basnet": SnippetGrid(25.0, 16, 16), "actionformer": SnippetGrid(30.0, 16, 4)}


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the store from the same source files
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # annotated videos with no feature file
    not_annotated: list[str] = field(default_factory=list)  # feature files of videos absent from annotations

    SHOWN = 20  # failures listed one per line; the rest are counted (a wrong grid fails every file alike)

    def format(self) -> str:
        lines = [f"imported {len(self.imported)}, skipped {len(self.skipped)} (unchanged), failed {len(self.failed)}"]
        for vid, why in sorted(self.failed.items())[: self.SHOWN]:
            lines.append(f"  FAILED {_printable(vid)}: {_printable(why)}")
        if len(self.failed) > self.SHOWN:
            lines.append(f"  ... and {len(self.failed) - self.SHOWN} more failures")
        if self.missing:
            lines.append(f"{len(self.missing)} annotated videos have no features: {', '.join(self.missing[:20])}"
                         + (" ..." if len(self.missing) > 20 else ""))
        if self.not_annotated:
            lines.append(f"{len(self.not_annotated)} feature files are not in the annotations: "
                         + ", ".join(map(_printable, self.not_annotated[:20]))
                         + (" ..." if len(self.not_annotated) > 20 else ""))
        return "\n".join(lines)


def _printable(text: str) -> str:
    """``text`` with what a UTF-8 terminal cannot show escaped: a file name in another encoding (its bytes kept
    as surrogates) made printing the report fail, and the report was lost."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def discover(layout: str, src: Path, feature: str | None = None) -> dict[str, dict[str, Path]]:
    """Map video id -> {source role -> npy path}. Roles: 'rgb', 'flow', 'rgb+flow', or a feature name."""
    src = Path(src).absolute()  # (recorded in each feature's provenance: a path that means the same anywhere)
    if not src.is_dir():
        raise StoreError(f"import source {src}: not a directory")
    found: dict[str, dict[str, Path]] = {}
    if layout == "basnet":
        for role in ("rgb", "flow"):
            for p in sorted(src.glob(f"*/{role}/*.npy")) + sorted(src.glob(f"{role}/*.npy")):
                roles = found.setdefault(p.stem, {})
                n = sum(1 for r in roles if r.split("#")[0] == role)
                roles[role if n == 0 else f"{role}#{n + 1}"] = p  # (one id in two splits: failed, not merged)
        if not found:
            raise StoreError(f"import source {src}: no {{train,test}}/{{rgb,flow}}/<video>.npy files (BaS-Net layout)")
    elif layout == "actionformer":
        for p in sorted(src.glob("*.npy")):
            found[p.stem] = {"rgb+flow": p}
        if not found:
            raise StoreError(f"import source {src}: no <video>.npy files (ActionFormer layout)")
    elif layout == "generic":
        if not feature:
            raise StoreError("generic import needs the feature name the files hold (--feature)")
        for p in sorted(src.glob("*.npy")):
            found[p.stem] = {feature: p}
        if not found:
            raise StoreError(f"import source {src}: no <video>.npy files")
    else:
        raise StoreError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    return found


def _load_npy(path: Path, video_id: str) -> np.ndarray:
    if not path.is_file():  # (a directory, a FIFO (np.load would wait on it forever), a broken link)
        raise StoreError(f"video {video_id!r}: {path} is not a regular file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported for this video only
        raise StoreError(f"video {video_id!r}: cannot read {path}: {e}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under an .npy name
        getattr(arr, "close", lambda: None)()
        raise StoreError(f"video {video_id!r}: {path} is an .npz archive, not one .npy array")
    if arr.ndim == 0:
        raise StoreError(f"video {video_id!r}: {path} holds a single number, not (T, D) features")
    return arr


def _to_features(layout: str, video_id: str, files: dict[str, Path]) -> dict[str, np.ndarray]:
    if layout == "basnet":
        twice = sorted(r.split("#")[0] for r in files if "#" in r)
        if twice:
            paths = sorted(str(p) for r, p in files.items() if r.split("#")[0] == twice[0])
            raise StoreError(f"video {video_id!r}: {twice[0]} features found more than once ({', '.join(paths)}): "
                             "one id in two splits; keep one")
        if set(files) != {"rgb", "flow"}:
            missing = {"rgb", "flow"} - set(files)
            raise StoreError(f"video {video_id!r}: {'/'.join(sorted(missing))} file missing (BaS-Net needs both)")
        if files["rgb"].parent.parent != files["flow"].parent.parent:
            raise StoreError(f"video {video_id!r}: its rgb ({files['rgb']}) and flow ({files['flow']}) files are in "
                             "different splits")
        return {"i3d_rgb": _load_npy(files["rgb"], video_id), "i3d_flow": _load_npy(files["flow"], video_id)}
    if layout == "actionformer":
        arr = _load_npy(files["rgb+flow"], video_id)
        if arr.ndim != 2 or arr.shape[1] != 2048:
            raise StoreError(f"video {video_id!r}: ActionFormer features must be (T, 2048) = RGB ‖ flow, got {arr.shape}")
        return {"i3d_rgb": arr[:, :1024], "i3d_flow": arr[:, 1024:]}
    (name, path), = files.items()
    arr = _load_npy(path, video_id)
    out = {name: arr}
    if name == "vggish" and arr.ndim == 2:
        out[AUDIO_MASK] = np.ones(arr.shape[0], dtype=bool)  # community audio features carry no mask
    return out


def _sha256_files(paths: list[Path], video_id: str) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        if not p.is_file():
            raise StoreError(f"video {video_id!r}: {p} is not a regular file")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def import_features(
    store: FeatureStore,
    layout: str,
    src: str | Path,
    feature: str | None = None,
    dataset: DatasetConfig | None = None,
    progress: bool = True,
    found: dict[str, dict[str, Path]] | None = None,
) -> ImportReport:
    """Import every video found under ``src``; one bad file fails only its video. ``found``: ``discover``'s
    result when the caller already has it (the CLI checks the source before it creates a store)."""
    found = discover(layout, Path(src), feature) if found is None else found
    report = ImportReport()
    if dataset is not None and layout == "actionformer":  # ActionFormer names ActivityNet files v_<id>.npy
        annotated = set(dataset.videos())
        found = {(v[2:] if v.startswith("v_") and v not in annotated and v[2:] in annotated and v[2:] not in found
                  else v): f for v, f in found.items()}  # (both <id>.npy and v_<id>.npy: <id> is <id>.npy)
    if dataset is not None:
        annotated = set(dataset.videos())
        report.missing = sorted(annotated - set(found))
        report.not_annotated = sorted(set(found) - annotated)
    for vid, files in tqdm(sorted(found.items()), desc=f"import {layout}", disable=not progress, unit="video"):
        try:
            validate_video_id(vid)
            source_sha = _sha256_files(list(files.values()), vid)
            version = store.video_version(vid)
            imported_only = True  # (a video that only holds imported features takes the new import's info)
            if store.has_video(vid):  # (not ``version``: a store written before versions has none)
                prov = store.provenance(vid)
                names = set(_feature_names(layout, feature))
                if names <= set(prov) and all(prov[n].params.get("source_sha256") == source_sha for n in names):
                    report.skipped.append(vid)
                    continue
                imported_only = all(p.extractor.startswith("import:") for p in prov.values())
            feats = _to_features(layout, vid, files)
            t = next(iter(feats.values())).shape[0]
            grid = store.grid
            if dataset is not None and dataset.has_video(vid):
                ann = dataset.annotations(vid)
                duration = float(ann.duration)
                check_snippet_count(vid, t, duration, grid, ann.fps)
            else:  # the span the snippets cover
                duration = ((t - 1) * grid.stride + grid.snippet_frames) / grid.fps
            # As extraction records it: the grid's frame rate and the frame count resampled to it.
            info = VideoInfo(
                source=str(Path(src) / vid), source_fingerprint=source_sha, fps=grid.fps,
                num_frames=int(round(duration * grid.fps)), duration=duration, has_audio=None,
            )
            pre = hashlib.sha256(f"{layout}|{sorted(feats)}".encode()).hexdigest()[:16]
            provenance = {
                name: FeatureProvenance(
                    extractor=f"import:{layout}", extractor_version=IMPORTER_VERSION, weights_sha256=None,
                    random_init=False, preprocess_hash=pre,
                    params={"source_files": [str(p) for p in files.values()], "source_sha256": source_sha},
                )
                for name in feats if name != AUDIO_MASK
            }
            # An extracted video keeps its info (decoded, not inferred); one that holds imports only is described
            # by this import (a re-import of a changed file kept the old one: a wrong length and fingerprint).
            store.write_video(vid, feats, info, provenance, keep_info=not imported_only, expect_version=version)
            report.imported.append(vid)
        except StoreConflict:
            report.failed[vid] = f"video {vid!r}: written by another process during this import; run it again"
        except StoreError as e:
            report.failed[vid] = str(e)
        except (OSError, ValueError, ArithmeticError) as e:  # (a file unreadable on the way: this video only)
            report.failed[vid] = f"video {vid!r}: {type(e).__name__}: {e}"
    return report


def check_snippet_count(video_id: str, t: int, duration: float, grid: SnippetGrid, video_fps: float | None) -> None:
    """Features whose length does not fit the video's duration on ``grid`` (beyond 2 snippets or 2%) were made
    on another grid: stored, their times would be off by the ratio."""
    expected = grid.num_snippets(int(round(duration * grid.fps)))
    if abs(t - expected) <= max(2, 0.02 * expected):
        return
    native = f"; the video is {video_fps:g} fps" if video_fps and abs(video_fps - grid.fps) > 0.01 * grid.fps else ""
    raise StoreError(
        f"video {video_id!r}: {t} snippets, but its {duration:.2f} s on the store's grid ({grid.fps:g} fps, "
        f"{grid.snippet_frames}-frame snippets every {grid.stride} frames) make {expected}: the features were "
        f"made on another grid{native}. Import them into a store with their grid (--fps/--snippet-frames/--stride)"
        f", or extract this video with `clipae extract`")


def _feature_names(layout: str, feature: str | None) -> list[str]:
    return [feature] if layout == "generic" else ["i3d_rgb", "i3d_flow"]
