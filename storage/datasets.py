"""Dataset configs: a YAML file naming an ActivityNet-style annotation JSON plus the protocol.

Any annotation file in the same format works, so users bring their own datasets (and number of
classes) by writing a YAML file; nothing in the code is specific to THUMOS or ActivityNet.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from clipae import CONFIG_DIR
from storage.grid import SnippetGrid


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class VideoAnnotation:
    subset: str
    duration: float
    fps: float | None
    segments: tuple[Segment, ...]

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.segments})


@dataclass
class DatasetConfig:
    name: str
    annotation_path: Path
    train_subset: str
    test_subset: str
    tiou_thresholds: list[float]
    grid: SnippetGrid = field(default_factory=SnippetGrid)
    ambiguous_path: Path | None = None
    exclude_videos: list[str] = field(default_factory=list)
    class_names: list[str] | None = None  # default: from the annotation file
    config_path: Path | None = None

    @cached_property
    def _raw(self) -> dict:
        if not self.annotation_path.exists():
            raise DatasetError(f"dataset {self.name!r}: annotation file {self.annotation_path} does not exist")
        with open(self.annotation_path, encoding="utf-8") as f:
            raw = json.load(f)
        if "database" not in raw or not isinstance(raw["database"], dict):
            raise DatasetError(
                f"dataset {self.name!r}: {self.annotation_path} is not ActivityNet-style (no 'database' object)"
            )
        return raw

    @cached_property
    def _videos(self) -> dict[str, VideoAnnotation]:
        out: dict[str, VideoAnnotation] = {}
        excluded = set(self.exclude_videos)
        for vid, v in self._raw["database"].items():
            if vid in excluded:
                continue
            try:
                segs = tuple(
                    Segment(float(a["segment"][0]), float(a["segment"][1]), str(a["label"]))
                    for a in v.get("annotations", [])
                )
                duration = float(v["duration"])
                if not (math.isfinite(duration) and duration > 0):  # (NaN, inf, 0: every length check breaks)
                    raise ValueError(f"duration must be a positive number of seconds, got {v['duration']!r}")
                if not all(math.isfinite(x) for s in segs for x in (s.start, s.end)):
                    raise ValueError("a segment's start or end is not a finite number")
                out[vid] = VideoAnnotation(str(v["subset"]), duration, v.get("fps"), segs)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise DatasetError(f"dataset {self.name!r}: video {vid!r} has a malformed entry: {e!r}") from None
        return out

    @cached_property
    def classes(self) -> list[str]:
        if self.class_names:
            return list(self.class_names)
        ids: dict[str, int] = {}
        for v in self._raw["database"].values():
            for a in v.get("annotations", []):
                if "label_id" in a:
                    ids.setdefault(a["label"], int(a["label_id"]))
                else:
                    ids.setdefault(a["label"], -1)
        if ids and all(i >= 0 for i in ids.values()):
            return [k for k, _ in sorted(ids.items(), key=lambda kv: kv[1])]
        return sorted(ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fps(self) -> float:
        return self.grid.fps

    def videos(self, subset: str | None = None) -> list[str]:
        return sorted(v for v, a in self._videos.items() if subset is None or a.subset == subset)

    def annotations(self, video_id: str) -> VideoAnnotation:
        try:
            return self._videos[video_id]
        except KeyError:
            raise DatasetError(f"dataset {self.name!r}: no annotation for video {video_id!r}") from None

    def has_video(self, video_id: str) -> bool:
        return video_id in self._videos

    def ground_truth_json(self) -> dict:
        """The annotations in ActivityNet format (what `clipae evaluate --gt` reads)."""
        db = {}
        for vid, a in self._videos.items():
            db[vid] = {
                "subset": a.subset,
                "duration": a.duration,
                **({"fps": a.fps} if a.fps else {}),
                "annotations": [{"label": s.label, "segment": [s.start, s.end]} for s in a.segments],
            }
        return {"version": self._raw.get("version", self.name), "database": db}

    def ambiguous(self) -> dict[str, list[tuple[float, float]]]:
        """THUMOS-style ambiguous segments (``video start end`` per line); empty when not configured."""
        out: dict[str, list[tuple[float, float]]] = {}
        if self.ambiguous_path is None:
            return out
        for n, line in enumerate(self.ambiguous_path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise DatasetError(f"{self.ambiguous_path}:{n}: expected 'video start end', got {line!r}")
            out.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))
        return out


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return p if p.is_absolute() else (base / p).resolve()


def load_dataset(name_or_path: str | os.PathLike) -> DatasetConfig:
    """Load ``configs/datasets/<name>.yaml`` or any YAML path. Paths inside are relative to the YAML file."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = CONFIG_DIR / "datasets" / f"{name_or_path}.yaml"
        if not p.exists():
            known = sorted(q.stem for q in (CONFIG_DIR / "datasets").glob("*.yaml"))
            raise DatasetError(f"unknown dataset {str(name_or_path)!r}; known: {known}, or pass a YAML path")
    if not p.exists():
        raise DatasetError(f"dataset config {p} does not exist")
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"dataset config {p}: not valid YAML: {e}") from None
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise DatasetError(f"dataset config {p}: must be a mapping of keys (annotations, train_subset, ...), "
                           f"got a {type(cfg).__name__}")
    base = p.parent
    missing = next((k for k in ("annotations", "train_subset", "test_subset", "tiou_thresholds") if k not in cfg), None)
    if missing:
        raise DatasetError(f"dataset config {p}: missing key {missing!r}")
    try:
        thresholds = [float(x) for x in cfg["tiou_thresholds"]]
        if not thresholds or not all(0 < t <= 1 for t in thresholds) or len(set(thresholds)) != len(thresholds):
            raise ValueError(f"tiou_thresholds must be a non-empty list of distinct numbers in (0, 1], "
                             f"got {cfg['tiou_thresholds']!r}")
        grid = cfg.get("grid") or {}
        if not isinstance(grid, dict):
            raise ValueError(f"grid must be a mapping (fps, snippet_frames, stride), got {grid!r}")
        for key in ("exclude_videos", "classes"):
            if cfg.get(key) is not None and not isinstance(cfg[key], list):
                raise ValueError(f"{key} must be a list, got {cfg[key]!r}")
        return DatasetConfig(
            name=str(cfg.get("name", p.stem)),
            annotation_path=_resolve(base, str(cfg["annotations"])),
            train_subset=str(cfg["train_subset"]),
            test_subset=str(cfg["test_subset"]),
            tiou_thresholds=thresholds,
            grid=SnippetGrid(**grid),
            ambiguous_path=_resolve(base, str(cfg["ambiguous"])) if cfg.get("ambiguous") else None,
            exclude_videos=[str(v) for v in cfg.get("exclude_videos") or []],
            class_names=[str(c) for c in cfg["classes"]] if cfg.get("classes") else None,
            config_path=p.resolve(),
        )
    except (TypeError, ValueError) as e:  # (a bad grid key or value, thresholds that are not numbers, ...)
        raise DatasetError(f"dataset config {p}: {e}") from None
