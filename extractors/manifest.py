"""Which videos to extract: a directory of video files, a glob pattern, one video file, or a manifest file.

Manifest formats (paths relative to the manifest's own directory unless absolute):

* text / CSV (``.txt``, ``.csv``, anything not ``.json``): one video per line,
  ``video_id,path``; a line with only a path uses the file name without extension as
  id; an optional header line ``video_id,path``; blank lines and ``#`` comments ignored.
* JSON (``.json``): ``[{"video_id": ..., "path": ...}, ...]``, ``[[id, path], ...]`` or
  ``{id: path, ...}``.

Ids must be valid store ids (no path separators, not starting with '.' or '_') and
unique; problems raise :class:`ManifestError` listing every offending entry.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

from storage import StoreError, validate_video_id
from storage.schema import folded_video_id

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .mpg .mpeg .flv .wmv .3gp .ts .mts .m2ts .ogv".split()
)


class ManifestError(ValueError):
    """The video list itself is unusable (not one video's problem)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (this process's share of N: 0 <= I < N) -> (I, N)."""
    index, sep, count = str(text).partition("/")
    if sep and index.strip().isdigit() and count.strip().isdigit() and 0 <= int(index) < int(count):
        return int(index), int(count)
    raise ValueError(f"a shard is I/N with 0 <= I < N (e.g. 0/2 and 1/2 for two processes), got {text!r}")


def in_shard(video_id: str, index: int, count: int) -> bool:
    """Whether ``video_id`` is in shard ``index`` of ``count``. By a hash of the id, not by position, so that
    processes started on different listings (a video arrived in between) still never share or skip one."""
    return int.from_bytes(hashlib.sha256(video_id.encode("utf-8")).digest()[:8], "big") % count == index


def discover_videos(source: str | os.PathLike, recursive: bool = False) -> list[tuple[str, Path]]:
    """(video_id, path) pairs from a directory of videos, a glob (``videos/*.mp4``, ``**`` allowed), one video
    file (by its extension) or a manifest file; directories, globs and single files use the file stem as id,
    directories and globs sorted by path."""
    src = Path(source).expanduser()
    if not src.exists() and any(c in str(source) for c in "*?["):
        return _validated(src, _glob(str(src)))
    if src.is_dir():
        pairs = _scan_directory(src, recursive)
    elif src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        pairs = [(src.stem, src, src.name)]
    elif src.is_file():
        pairs = _read_json(src) if src.suffix.lower() == ".json" else _read_lines(src)
        videos = _validated(src, pairs)
        if not any(p.exists() or p.is_symlink() for _, p in videos):
            # (one missing entry fails alone; none at all is the wrong file or the wrong directory, not N failures)
            first = next(w for v, _, w in pairs if v is not None)
            which = "its one entry is not" if len(videos) == 1 else f"none of its {len(videos)} entries is"
            raise ManifestError(f"{src}: {which} an existing file (first, {first}: {videos[0][1]}); paths are "
                                f"relative to the manifest's directory. Is {src.name} a manifest?")
        return videos
    else:
        what = "video file" if src.suffix.lower() in VIDEO_EXTENSIONS else "directory, video file or manifest"
        raise ManifestError(f"{src}: no such {what}")
    return _validated(src, pairs)


def _scan_directory(d: Path, recursive: bool) -> list[tuple[str, Path, str]]:
    """Video files by extension. Hidden files (a leading '.', such as macOS's "._clip.mp4" metadata) are not
    videos and are left out; a broken symlink is kept, so that it fails visibly ("file does not exist")."""
    files = d.rglob("*") if recursive else d.iterdir()
    found = sorted(p for p in files if (p.is_file() or p.is_symlink()) and p.suffix.lower() in VIDEO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(d).parts))
    return [(p.stem, p, str(p.relative_to(d))) for p in found]


def _glob(pattern: str) -> list[tuple[str, Path, str]]:
    import glob

    found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    return [(p.stem, p, str(p)) for p in found]


def _read_lines(f: Path) -> list[tuple[str | None, Path | None, str]]:
    try:
        text = f.read_text(encoding="utf-8-sig")  # (-sig: a byte-order mark, as Excel writes, is not part of an id)
    except UnicodeDecodeError as e:
        raise ManifestError(f"{f}: not a text manifest (not UTF-8 at byte {e.start}); pass a directory, a glob, a "
                            f"video file ({' '.join(sorted(VIDEO_EXTENSIONS))}) or a manifest (.txt/.csv/.json)") from e
    out = []
    first = True  # (the header, when there is one, is the first row that is not blank or a comment)
    with io.StringIO(text, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            raw, cells = row, [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            header, first = first and [c.lower() for c in cells[:2]] == ["video_id", "path"], False
            if header:
                continue
            where = f"{f.name}:{lineno}"
            if len(cells) == 1:
                p = _resolve_cell(f, raw[0])
                out.append((p.stem, p, where))
            elif len(cells) == 2 and not cells[1]:
                out.append((None, None, f"{where}: empty path"))
            elif len(cells) == 2:
                out.append((cells[0], _resolve_cell(f, raw[1]), where))
            else:
                out.append((None, None, f"{where}: expected 'video_id,path' or 'path', got {len(cells)} fields"))
    return out


def _read_json(f: Path) -> list[tuple[str | None, Path | None, str]]:
    try:
        data = json.loads(f.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"{f}: not valid JSON: {e}") from e
    items = list(data.items()) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ManifestError(f"{f}: expected a list or an object, got {type(data).__name__}")
    out = []
    for i, item in enumerate(items):
        where = f"{f.name}[{i}]"
        if isinstance(item, dict) and {"video_id", "path"} <= set(item):
            vid, p = item["video_id"], item["path"]
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            vid, p = item
        else:
            out.append((None, None, f"{where}: expected {{'video_id', 'path'}} or [id, path], got {item!r}"))
            continue
        if not isinstance(vid, str) or not isinstance(p, str) or not p.strip():  # (null was stored as id "None")
            out.append((None, None, f"{where}: video_id and path must be strings (a path not empty), got "
                                    f"{vid!r}, {p!r}"))
            continue
        out.append((vid, _resolve(f, p), where))
    return out


def _resolve_cell(manifest: Path, cell: str) -> Path:
    """A CSV path cell: surrounding spaces are layout ('id, path') unless the file's name has them."""
    stripped = _resolve(manifest, cell.strip())
    if stripped.exists() or cell == cell.strip():
        return stripped
    as_written = _resolve(manifest, cell)
    return as_written if as_written.exists() else stripped


def _resolve(manifest: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else manifest.parent / q


def _validated(src: Path, pairs: list[tuple[str | None, Path | None, str]]) -> list[tuple[str, Path]]:
    """Check ids (entries with id None are malformed lines, their message in the third field)."""
    problems, seen = [], {}
    for vid, _, where in pairs:
        if vid is None:  # a malformed entry; ``where`` holds the message
            problems.append(where)
            continue
        try:
            validate_video_id(vid)
        except StoreError as e:
            problems.append(f"{where}: {e}")
        # Ids are directory names: ids equal up to case or Unicode normalisation (NFC/NFD "café") would be one
        # directory on macOS/Windows file systems, so one video would replace the other there.
        key = folded_video_id(vid)
        if key in seen:
            first_vid, first_where = seen[key]
            same = "" if first_vid == vid else f" (same as {first_vid!r} up to case or Unicode normalisation)"
            problems.append(f"{where}: duplicate video id {vid!r}{same} (first at {first_where})")
        seen.setdefault(key, (vid, where))
    if problems:
        hint = ("\n  (ids are file names without extension; to give files other ids, list them in a manifest: "
                "'video_id,path' lines)" if src.is_dir() else "")
        raise ManifestError(f"{src}: {len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'}:\n  "
                            + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "") + hint)
    if not pairs:
        raise ManifestError(f"{src}: no videos found" + (" (extensions: " + " ".join(sorted(VIDEO_EXTENSIONS)) + ")"
                                                          if src.is_dir() else ""))
    return [(vid, p) for vid, p, _ in pairs]
