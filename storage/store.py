"""The chunked Zarr v3 feature store: one group per video, published atomically.

Layout (documented for outside readers in README "Using the features in your project")::

    <store>/zarr.json                     root group, attrs["clipae_store"]: grid, features, codec
    <store>/videos/<video_id>/zarr.json   video group, attrs["clipae_video"]: info, provenance, hashes
    <store>/videos/<video_id>/<feature>   (T, D) float32, chunked along T; dims ("time", "<feature>_dim")
    <store>/videos/<video_id>/audio_mask  (T,) bool, with vggish
    <store>/videos/<video_id>/time        (T,) float64 snippet centre in seconds (an xarray coordinate)
    <store>/_staging/                     writers' scratch space (tmp/, trash/, locks/); never read

A video directory is built under ``_staging/tmp`` and published by one rename (or an atomic exchange
when it replaces an older version), so a video is either absent or complete. Writers of one video
serialise on a per-video ``flock``; writers of different videos never touch shared files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numcodecs
import numpy as np
import zarr
from zarr.storage import LocalStore

from storage.atomic import exchange, exchange_supported, file_lock, link_or_copy_tree
from storage.codecs import DEFAULT_CODEC, CodecSpec, chunk_decoder, identity_decode
from storage.grid import SnippetGrid
from storage.schema import (
    AUDIO_MASK,
    FEATURE_DIMS,
    FeatureProvenance,
    StoreError,
    VideoInfo,
    folded_video_id,
    utc_now,
    validate_features,
    validate_video_id,
)

FORMAT_VERSION = 1
STORE_ATTR = "clipae_store"
VIDEO_ATTR = "clipae_video"
TIME_ARRAY = "time"
DEFAULT_CHUNK_SNIPPETS = 4096


def _read_json(path: Path) -> dict:
    """A metadata file as a JSON object. A missing one stays FileNotFoundError (callers tell a concurrent
    replacement from damage); a damaged one is a StoreError naming the file and what is wrong with it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        out = json.loads(data)
    except ValueError as e:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise StoreError(f"metadata file {path}: not valid JSON ({len(data)} bytes; {e})") from None
    if not isinstance(out, dict):
        raise StoreError(f"metadata file {path}: holds a JSON {type(out).__name__}, not an object")
    return out


#: How recently a video's old version must have been moved to ``_staging/trash`` (its entry's ctime) for
#: readers to wait for the replacement to finish (seconds; generous for the clock skew of a network
#: filesystem, whose server sets the ctime)
TRASH_RECENT_S = 10.0


class StoreConflict(StoreError):
    """A write planned on one version of a video found another one under the video's lock: another process
    wrote (or deleted) the video in between. Nothing was written; re-plan against the current version."""


#: ``write_video(expect_version=ANY_VERSION)``: write whatever version is stored (no check)
ANY_VERSION = object()


class StoreDamageError(StoreError):
    """A damaged file in the store (not a concurrent writer's doing: the video's version did not change);
    ``detail`` says what and where without the repair advice (for verify). Re-extracting the video repairs it."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


def _repair_hint(store: Path, video_dir: Path) -> str:
    return (f"the store is damaged (`clipae store verify {store}` lists every problem); to repair, delete "
            f"{video_dir} and run `clipae extract` again to recompute the video")


def _blosc_sizes(raw: bytes) -> tuple[int, int] | None:
    """(decoded bytes, compressed bytes) from a blosc chunk's 16-byte header; None if it has none.
    Blosc trusts its header: a truncated chunk otherwise decodes into garbage without an error."""
    if len(raw) < 16:
        return None
    nbytes, _blocksize, cbytes = struct.unpack_from("<III", raw, 4)
    return nbytes, cbytes


def _meta_problem(meta) -> str | None:
    """What is missing from a video's attributes as ``write_video`` publishes them (valid JSON can still lack
    them: a hand edit, another tool), or None. Checked on every read so that no caller meets a bare KeyError."""
    if not isinstance(meta, dict):
        return f"no valid {VIDEO_ATTR!r} attributes"
    for key, kind in (("features", dict), ("info", dict), ("num_snippets", int), ("version", str),
                      ("fingerprint", str)):
        if not isinstance(meta.get(key), kind):
            return f"{VIDEO_ATTR!r} attributes lack a valid {key!r}"
    if isinstance(meta["num_snippets"], bool) or meta["num_snippets"] < 1:  # (a stored video has >= 1 snippet)
        return f"{VIDEO_ATTR!r} attributes lack a valid 'num_snippets' (got {meta['num_snippets']!r})"
    for name, f in meta["features"].items():
        if not (isinstance(f, dict) and isinstance(f.get("provenance"), dict) and isinstance(f.get("sha256"), str)):
            return f"feature {name!r} lacks its sha256 or provenance"
    return None


class FeatureStore:
    """A dataset's features. Construct with :meth:`create`, :meth:`open` or :meth:`open_or_create`."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self._meta = meta
        self.grid = SnippetGrid.from_dict(meta["grid"])
        self.name: str = meta.get("name", self.path.stem)
        self.feature_dims: dict[str, int] = {k: int(v) for k, v in meta["features"].items()}
        self.codec = CodecSpec(**meta["codec"])
        self.chunk_snippets = int(meta["chunk_snippets"])
        self._videos = self.path / "videos"
        self._staging = self.path / "_staging"
        self._exchange_ok: bool | None = None

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        grid: SnippetGrid | None = None,
        name: str | None = None,
        features: dict[str, int] | None = None,
        codec: CodecSpec = DEFAULT_CODEC,
        chunk_snippets: int = DEFAULT_CHUNK_SNIPPETS,
    ) -> "FeatureStore":
        path = Path(path)
        if (path / "zarr.json").exists():
            raise StoreError(f"store {path}: already exists")
        grid = grid or SnippetGrid()
        dims = dict(FEATURE_DIMS if features is None else features)
        for fname, d in dims.items():
            if fname in (AUDIO_MASK, TIME_ARRAY) or not fname.isidentifier() or int(d) <= 0:
                raise StoreError(f"store {path}: invalid feature declaration {fname!r}: {d!r}")
        codec.zarr_compressors()  # validates the name
        meta = {
            "format_version": FORMAT_VERSION,
            "name": name or path.stem,
            "grid": grid.to_dict(),
            "features": dims,
            "codec": codec.to_dict(),
            "chunk_snippets": int(chunk_snippets),
            "created": utc_now(),
        }
        _check_can_become_store(path)
        path.mkdir(parents=True, exist_ok=True)
        # Build the skeleton in a scratch directory and publish its root zarr.json last, so that a
        # concurrent `open_or_create` either sees no store or a complete one.
        scratch = path / f".create-{uuid.uuid4().hex}"
        root = zarr.open_group(LocalStore(scratch), mode="w", zarr_format=3, attributes={STORE_ATTR: meta})
        root.create_group("videos", attributes={"description": "one group per video; see README"})
        root.create_group("_staging", attributes={"description": "writers' scratch space; ignore"})
        for sub in ("videos", "_staging"):
            try:
                os.rename(scratch / sub, path / sub)
            except OSError:  # a concurrent creator got there first; its directory is equivalent
                pass
        for sub in ("tmp", "trash", "locks"):
            (path / "_staging" / sub).mkdir(exist_ok=True)
        try:
            os.link(scratch / "zarr.json", path / "zarr.json")  # fails if another creator won the race
        except FileExistsError:
            pass
        shutil.rmtree(scratch, ignore_errors=True)
        store = cls.open(path)
        if store.grid != grid:  # another creator won the race with another grid: not the store asked for
            raise StoreError(f"store {path}: created concurrently with snippet grid {store.grid}, not {grid}")
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureStore":
        path = Path(path)
        root_meta = path / "zarr.json"
        if not root_meta.exists():
            raise StoreError(f"store {path}: not a feature store (no zarr.json); stores are made by `clipae extract` "
                             "or `clipae import-features`")
        attrs = _read_json(root_meta).get("attributes", {})
        meta = attrs.get(STORE_ATTR) if isinstance(attrs, dict) else None
        if meta is None:
            raise StoreError(f"store {path}: a Zarr group but not a clipae feature store (no {STORE_ATTR!r} attrs)")
        try:  # (valid JSON can still be malformed: a hand edit, another tool; say which key, not a traceback)
            if not isinstance(meta, dict):
                raise ValueError(f"{STORE_ATTR!r} is not an object")
            version = meta.get("format_version", 0)
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"'format_version' must be an integer, got {version!r}")
            if version > FORMAT_VERSION:
                raise StoreError(f"store {path}: format {version} is newer than this code understands")
            return cls(path, meta)
        except StoreError:
            raise
        except KeyError as e:
            raise StoreError(f"store {path}: metadata file {root_meta}: {STORE_ATTR!r} lacks {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"store {path}: metadata file {root_meta}: invalid {STORE_ATTR!r} attributes: {e}") from None

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike, grid: SnippetGrid | None = None, name: str | None = None, **kwargs
    ) -> "FeatureStore":
        path = Path(path)
        if (path / "zarr.json").exists():
            store = cls.open(path)
            if grid is not None and store.grid != grid:
                raise StoreError(f"store {path}: has snippet grid {store.grid}, but {grid} was requested")
            return store
        try:
            return cls.create(path, grid=grid, name=name, **kwargs)
        except StoreError:
            if (path / "zarr.json").exists():  # a concurrent creator published first: open theirs
                return cls.open_or_create(path, grid=grid, name=name, **kwargs)
            raise

    # ----------------------------------------------------------------- reading
    def list_videos(self) -> list[str]:
        """Published videos, sorted. A directory listing: fast even for tens of thousands of videos.

        (Without rename-exchange a video being replaced is briefly absent, its old version in
        ``_staging/trash``: then the listing is taken again, briefly, so it is not left out.)"""
        for delay in (0.001, 0.01, 0.05, 0.2, None):
            with os.scandir(self._videos) as it:
                ids = sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
            if delay is None or not (self._recently_trashed() - set(ids)):
                return ids
            time.sleep(delay)
        return ids  # (unreachable)

    def _listed(self, name: str) -> bool:
        """``name`` is an entry of videos/ as it is (not a path that leads elsewhere)."""
        try:
            return "/" not in name and name not in (".", "..") and name in os.listdir(self._videos)
        except OSError:
            return False

    def _recently_trashed(self) -> set[str]:
        """Ids of videos moved into ``_staging/trash`` (as ``<id>.<pid>.<random>``) in the last TRASH_RECENT_S
        seconds, by each entry's own ctime (a rename sets it): a replacement may be between its two renames
        (milliseconds apart). Older entries are killed writers' leftovers, for recovery; no reader waits on them."""
        ids = set()
        try:
            with os.scandir(self._staging / "trash") as it:
                for e in it:
                    parts = e.name.rsplit(".", 2)
                    try:
                        if len(parts) == 3 and time.time() - e.stat(follow_symlinks=False).st_ctime < TRASH_RECENT_S:
                            ids.add(parts[0])
                    except FileNotFoundError:
                        continue  # (removed meanwhile)
        except OSError:  # (absent, or unreadable: readers ignore _staging, a listing does not fail for it)
            pass
        return ids

    def __len__(self) -> int:
        return len(self.list_videos())

    def __contains__(self, video_id: str) -> bool:
        return self.has_video(video_id)

    def has_video(self, video_id: str) -> bool:
        return (self._videos / video_id / "zarr.json").exists()

    def _video_meta(self, video_id: str) -> dict:
        try:
            validate_video_id(video_id)
        except StoreError as e:
            if self._listed(video_id):  # (a directory someone put in videos/ under a name no id can have)
                detail = f"directory {self._videos / video_id} is not a valid video id ({e})"
                raise StoreDamageError(f"{detail}; rename or remove it", detail) from None
            raise
        vdir = self._videos / video_id
        try:
            doc = self._read_video_json(vdir)
        except FileNotFoundError:  # (the directory stayed, without its zarr.json: see _read_video_json)
            detail = f"unreadable metadata file {vdir / 'zarr.json'}: missing"
            raise StoreDamageError(f"video {video_id!r}: {detail}; {_repair_hint(self.path, vdir)}", detail) from None
        except StoreError as e:  # (not valid JSON, not an object)
            raise StoreDamageError(f"video {video_id!r}: {e}; {_repair_hint(self.path, vdir)}", f"unreadable {e}") from None
        except OSError as e:  # (permission denied, a directory or a symlink loop in its place)
            detail = f"unreadable metadata file {vdir / 'zarr.json'}: {e.strerror or e}"
            raise StoreDamageError(f"video {video_id!r}: {detail}; {_repair_hint(self.path, vdir)}", detail) from None
        if doc is None:
            raise StoreError(f"video {video_id!r}: not in store {self.path}")
        attrs = doc.get("attributes")
        meta = attrs.get(VIDEO_ATTR) if isinstance(attrs, dict) else None
        problem = _meta_problem(meta)
        if problem:
            detail = f"unreadable metadata file {vdir / 'zarr.json'}: {problem}"
            raise StoreDamageError(f"video {video_id!r}: {detail}; {_repair_hint(self.path, vdir)}", detail)
        return meta

    def _read_video_json(self, vdir: Path) -> dict | None:
        """A video's zarr.json; None when its directory is absent (not in the store); FileNotFoundError only
        when the directory stays without it (damage).

        Where rename-exchange is not available (NFS, CIFS), a replacement renames the old directory away (to
        ``_staging/trash/<id>.<pid>.<random>``) and then the new one in: a reader between the two finds no
        directory, or a directory without its file, and the video back a moment later. So while the video's
        old version was moved to trash in the last seconds, or its directory stays without zarr.json, the file
        is read again (briefly)
        before the video counts as absent or damaged: a video being replaced must not read as "not in store"
        (a training run would fail) nor as damaged (extraction rewrites damaged videos)."""
        for delay in (0.0, 0.001, 0.01, 0.05, 0.2, None):
            try:
                return _read_json(vdir / "zarr.json")
            except FileNotFoundError:
                if not vdir.is_dir():
                    if delay is None or vdir.name not in self._recently_trashed():
                        return None
                elif delay is None:
                    raise
                time.sleep(delay)
        return None  # (unreachable)

    def video_version(self, video_id: str) -> str | None:
        """The id of the stored version of a video (new at every write), None when it is not in the store: a
        writer that plans outside the video's lock passes it to ``write_video(expect_version=...)``."""
        if not (self._videos / video_id).is_dir():
            return None
        try:
            return self._video_meta(video_id).get("version")
        except StoreError:
            if not (self._videos / video_id).is_dir():  # (deleted meanwhile)
                return None
            raise

    def missing_arrays(self, video_id: str) -> set[str]:
        """The features (and ``audio_mask``) the video's metadata lists whose array is gone from disk (no
        ``zarr.json``): damage that a re-extraction of those features repairs. One ``stat`` per array."""
        vdir = self._videos / video_id
        names = self.features_of(video_id) | {TIME_ARRAY}  # (every write rewrites time: a video missing it is redone)
        return {name for name in names if not (vdir / name / "zarr.json").is_file()}

    def video_meta(self, video_id: str) -> dict:
        """The raw per-video attributes (info, features with hashes and provenance, fingerprint)."""
        return self._video_meta(video_id)

    def features_of(self, video_id: str) -> set[str]:
        meta = self._video_meta(video_id)
        names = set(meta["features"])
        if meta.get("audio_mask"):
            names.add(AUDIO_MASK)
        return names

    def num_snippets(self, video_id: str) -> int:
        return int(self._video_meta(video_id)["num_snippets"])

    def video_info(self, video_id: str) -> VideoInfo:
        return VideoInfo.from_dict(self._video_meta(video_id)["info"])

    def provenance(self, video_id: str) -> dict[str, FeatureProvenance]:
        meta = self._video_meta(video_id)
        return {k: FeatureProvenance.from_dict(v["provenance"]) for k, v in meta["features"].items()}

    def load(self, video_id: str, features: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Load features of one video as float32 ``(T, D)`` (``audio_mask``: bool ``(T,)``).

        Consistent under concurrent replacement: the video's version id is read before and after, and
        the read is retried if a writer published a new version in between.
        """
        return self.load_with_meta(video_id, features)[1]

    def load_with_meta(
        self, video_id: str, features: Iterable[str] | None = None
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """Like :meth:`load`, plus the video's attributes from the same published version."""
        for _attempt in range(5):
            meta = self._video_meta(video_id)
            wanted = self._resolve_features(video_id, meta, features)
            try:
                out = {name: self._read_array(video_id, name) for name in wanted}
                self._check_shapes(video_id, meta, out)
            except (FileNotFoundError, StoreError) as e:
                # A writer replacing the video mid-read looks like a missing or odd-sized file: retry then.
                # With the version unchanged, the files really are gone or damaged.
                if self._same_version(video_id, meta):
                    raise self._damage_error(video_id, e) from None
                continue
            if self._same_version(video_id, meta):
                return meta, out
        raise StoreError(f"video {video_id!r}: kept changing while being read (5 attempts)")

    def _check_shapes(self, video_id: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Every array must have the video's T rows and its feature's width: features of different lengths
        would otherwise train silently (an array's own zarr.json is read for its shape, not the video's)."""
        t = meta["num_snippets"]
        for name, a in arrays.items():
            want = (t,) if name in (AUDIO_MASK, TIME_ARRAY) else (t, self.feature_dims.get(name, a.shape[-1]))
            if a.shape != want:
                detail = f"array {name!r} has shape {a.shape}, the video's metadata says {want}"
                raise StoreDamageError(f"video {video_id!r}: {detail}; "
                                       f"{_repair_hint(self.path, self._videos / video_id)}", detail)

    def _same_version(self, video_id: str, meta: dict) -> bool:
        try:
            return self._video_meta(video_id)["version"] == meta["version"]
        except StoreError:  # (gone or being replaced right now)
            return False

    def _damage_error(self, video_id: str, e: Exception) -> StoreError:
        if isinstance(e, StoreError):
            return e
        missing = Path(e.filename) if getattr(e, "filename", None) else self._videos / video_id
        what = f"array {missing.parent.name!r}" if missing.name == "zarr.json" else "a file"
        detail = f"{what} listed in its metadata is missing ({missing})"
        return StoreDamageError(f"video {video_id!r}: {detail}; the store is damaged: run `clipae extract` on this "
                                "video again, which recomputes missing arrays", detail)

    def _resolve_features(self, video_id: str, meta: dict, features: Iterable[str] | None) -> list[str]:
        present = set(meta["features"]) | ({AUDIO_MASK} if meta.get("audio_mask") else set())
        if features is None:
            return sorted(present)
        wanted = list(features)
        for name in wanted:
            if name not in self.feature_dims and name not in (AUDIO_MASK, TIME_ARRAY):
                raise StoreError(
                    f"video {video_id!r}: unknown feature {name!r}; this store holds {sorted(self.feature_dims)}"
                )
            if name not in present and name != TIME_ARRAY:
                raise StoreError(f"video {video_id!r}: feature {name!r} not extracted yet (has {sorted(present)})")
        return wanted

    def _read_array(self, video_id: str, name: str) -> np.ndarray:
        adir = self._videos / video_id / name
        try:
            ameta = _read_json(adir / "zarr.json")
            decoder = chunk_decoder(ameta.get("codecs", []))
            cke = ameta.get("chunk_key_encoding", {})
            simple_keys = cke.get("name") == "default" and cke.get("configuration", {}).get("separator", "/") == "/"
            shape = tuple(ameta["shape"])
            chunk_shape = tuple(ameta["chunk_grid"]["configuration"]["chunk_shape"])
            dtype = np.dtype(ameta["data_type"]).newbyteorder("<")
        except (StoreError, KeyError, TypeError, ValueError, AttributeError) as e:  # (a missing file propagates)
            detail = f"array {name!r}: unreadable metadata file {adir / 'zarr.json'} ({type(e).__name__}: {e})"
            raise StoreDamageError(f"video {video_id!r}: {detail}; {_repair_hint(self.path, self._videos / video_id)}",
                                   detail) from None
        if decoder is None or not simple_keys or chunk_shape[1:] != shape[1:]:
            return zarr.open_array(LocalStore(adir), mode="r")[...]
        # Fast path for our own layout: chunks span every axis but time; decode chunk files directly.
        out = np.empty(shape, dtype=dtype)
        t = shape[0]
        rest = "/0" * (len(shape) - 1)
        for i, start in enumerate(range(0, t, chunk_shape[0])):
            stop = min(start + chunk_shape[0], t)
            exact = stop - start == chunk_shape[0]
            dest = out[start:stop] if exact else np.empty(chunk_shape, dtype)  # (a tail chunk is stored whole)
            try:
                self._read_chunk(adir / "c" / f"{i}{rest}", decoder, dest, video_id, name)
            except FileNotFoundError:  # zarr leaves chunks of fill values unwritten
                out[start:stop] = ameta.get("fill_value") or 0
                continue
            if not exact:
                out[start:stop] = dest[: stop - start]
        return out

    def _read_chunk(self, path: Path, decoder, dest: np.ndarray, video_id: str, name: str) -> None:
        """Decode one chunk file into ``dest`` (decompressing straight into it), refusing a file whose size
        does not fit the chunk: ``np.empty`` would otherwise hand back uninitialised memory as features."""
        def damaged(problem: str) -> StoreError:
            detail = f"chunk file {path}: {problem}"
            return StoreDamageError(f"video {video_id!r}: array {name!r} {detail}; "
                           f"{_repair_hint(self.path, self._videos / video_id)}", detail)

        want = dest.nbytes
        with open(path, "rb") as f:
            if decoder is identity_decode:
                size = os.fstat(f.fileno()).st_size
                if size != want or f.readinto(memoryview(dest).cast("B")) != want:  # zero-copy, like np.load
                    raise damaged(f"wrong size: {size} bytes, expected {want}")
                return
            raw = f.read()
        blosc = isinstance(getattr(decoder, "__self__", None), numcodecs.Blosc)
        if blosc:  # its header gives both sizes: check them, then decompress straight into the result
            sizes = _blosc_sizes(raw)
            if sizes is None or sizes[1] != len(raw):
                raise damaged(f"wrong size: {len(raw)} bytes, its blosc header says "
                              f"{sizes[1] if sizes else 'nothing (too short for one)'}")
            if sizes[0] != want:
                raise damaged(f"wrong size: decodes to {sizes[0]} bytes, expected {want}")
        try:
            # zstd fills a bigger buffer without complaint: decode to its own buffer and check the size
            decoded = memoryview(decoder(raw, dest) if blosc else decoder(raw)).cast("B")
        except Exception as e:  # noqa: BLE001 -- codec libraries raise RuntimeError/ValueError on bad bytes
            raise damaged(f"cannot be decoded: {type(e).__name__}: {e}") from None
        if decoded.nbytes != want:
            raise damaged(f"wrong size: decodes to {decoded.nbytes} bytes, expected {want}")
        if not blosc:
            memoryview(dest).cast("B")[:] = decoded

    def iter_videos(
        self,
        features: Iterable[str] | None = None,
        video_ids: Iterable[str] | None = None,
        prefetch: int = 8,
        workers: int = 4,
    ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(video_id, features)`` in order, reading ahead on a thread pool (file reads and blosc
        decompression release the GIL, so this overlaps I/O with the consumer's compute)."""
        ids = list(self.list_videos() if video_ids is None else video_ids)
        feats = None if features is None else list(features)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: deque = deque()
            it = iter(ids)
            for vid in it:
                pending.append((vid, pool.submit(self.load, vid, feats)))
                if len(pending) >= prefetch:
                    break
            while pending:
                vid, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.load, nxt, feats)))
                yield vid, fut.result()

    def fingerprint(self) -> str:
        """A content hash of every published video's features and provenance, for runs to record.

        A video whose metadata is damaged contributes a marker (the hash of its metadata file's bytes) rather
        than failing the whole fingerprint: damage to a video a run does not read must not stop the run.
        Damage inside arrays is not seen here (the recorded hashes are): ``verify`` finds it."""
        h = hashlib.sha256()
        h.update(json.dumps({"grid": self._meta["grid"], "features": self.feature_dims}, sort_keys=True).encode())
        ids = self.list_videos()

        def fp(vid: str) -> str:
            try:
                return self._video_meta(vid)["fingerprint"]
            except StoreDamageError:  # (not the run's concern unless it reads the video: then load() raises)
                raw = self._videos / vid / "zarr.json"
                return "damaged:" + (hashlib.sha256(raw.read_bytes()).hexdigest() if raw.is_file() else "missing")

        with ThreadPoolExecutor(max_workers=8) as pool:
            for vid, f in zip(ids, pool.map(fp, ids)):
                h.update(f"{vid}\0{f}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        ids = self.list_videos()
        counts: dict[str, int] = {}
        configs: dict[str, set[str]] = {}
        random_init: dict[str, int] = {}
        damaged: dict[str, str] = {}
        for vid in ids:
            try:
                meta = self._video_meta(vid)
            except StoreDamageError as e:  # reported, not fatal: one bad file should not hide the rest of the store
                damaged[vid] = str(e)
                continue
            except StoreError:  # (deleted since it was listed)
                continue
            for fname, fmeta in meta["features"].items():
                counts[fname] = counts.get(fname, 0) + 1
                if fmeta["provenance"].get("random_init"):
                    random_init[fname] = random_init.get(fname, 0) + 1
                configs.setdefault(fname, set()).add(FeatureProvenance.from_dict(fmeta["provenance"]).config_key())
        return {
            "path": str(self.path),
            "name": self.name,
            "videos": len(ids),
            "grid": self.grid.to_dict(),
            "features": self.feature_dims,
            "videos_per_feature": counts,
            "random_init_features": random_init,  # feature -> videos whose feature came from random-init networks
            # >1 for a feature: its videos were made differently (see feature_configs / mixed_configs_message)
            "configs_per_feature": {f: len(keys) for f, keys in configs.items()},
            "codec": self.codec.to_dict(),
            # video -> why its metadata cannot be read; such videos are left out of the counts above
            "damaged_videos": damaged,
            "fingerprint": None if damaged else self.fingerprint(),  # (none for a store with unreadable videos)
        }

    def feature_configs(self) -> dict[str, dict[str, list[str]]]:
        """feature -> {``FeatureProvenance.config_key()`` -> video ids}: more than one key for a feature means
        its videos were made in different ways (other weights, random init, other preprocessing), which a
        model trained on the store would mix without knowing. Videos whose metadata cannot be read are left
        out (:meth:`summary` lists them as ``damaged_videos``)."""
        out: dict[str, dict[str, list[str]]] = {}
        for vid in self.list_videos():
            try:
                prov = self.provenance(vid)
            except StoreError:
                continue
            for name, p in prov.items():
                out.setdefault(name, {}).setdefault(p.config_key(), []).append(vid)
        return out

    def verify(self, video_id: str) -> list[str]:
        """Re-read one video and check it against its attributes: every feature and the audio mask against
        the sha256 recorded when it was written, the time coordinate against the grid. Returns the names
        of what does not match (empty: intact); :meth:`verify_report` says what is wrong with each."""
        return list(self.verify_report(video_id))

    def verify_report(self, video_id: str) -> dict[str, str]:
        """Like :meth:`verify`: what does not match -> what is wrong with it (a missing array or chunk file,
        a chunk of the wrong size, a content hash mismatch, an off time coordinate, unreadable metadata)."""
        for _attempt in range(5):
            try:
                meta = self._video_meta(video_id)
            except StoreDamageError as e:
                return {"metadata": e.detail}
            expected = {name: fmeta.get("sha256") for name, fmeta in meta["features"].items()}
            if meta.get("audio_mask"):
                expected[AUDIO_MASK] = meta["audio_mask"]
            problems = {}
            t = int(meta["num_snippets"])
            for name, sha in expected.items():
                width = () if name == AUDIO_MASK else (self.feature_dims.get(name),)
                problem = self._shape_problem(video_id, name, (t, *width)) or self._check_array(video_id, name, sha)
                if problem:
                    problems[name] = problem
            problem = self._shape_problem(video_id, TIME_ARRAY, (t,)) or self._check_time(video_id, t)
            if problem:
                problems[TIME_ARRAY] = problem
            if self._same_version(video_id, meta):  # (else a writer replaced it meanwhile: check the new one)
                return problems
        raise StoreError(f"video {video_id!r}: kept changing while being verified (5 attempts)")

    def layout_problems(self) -> dict[str, str]:
        """Damage outside the videos' groups, which zarr/xarray readers meet first: the ``videos`` group's own
        metadata (plain zarr cannot open the group without it), and entries of videos/ this store does not list
        as videos but a plain listing of the group would (symbolic links)."""
        problems = {}
        group = self._videos / "zarr.json"
        try:
            if _read_json(group).get("node_type") != "group":
                problems["videos/zarr.json"] = f"{group}: not a Zarr group's metadata"
        except FileNotFoundError:
            problems["videos/zarr.json"] = f"{group}: missing (zarr.open_group cannot open the videos group)"
        except (OSError, StoreError) as e:
            problems["videos/zarr.json"] = f"{group}: unreadable ({e})"
        try:
            with os.scandir(self._videos) as it:
                links = sorted(e.name for e in it if e.is_symlink())
        except OSError:
            links = []
        for name in links:
            problems[f"videos/{name}"] = (f"{self._videos / name}: a symbolic link, not a video of this store "
                                          "(ignored here; plain zarr readers follow it); remove it")
        return problems

    def _refuse_case_twin(self, video_id: str) -> None:
        """A new id equal to a stored one up to case or Unicode normalisation ("Clip" and "clip", NFC and NFD
        "café") is refused: on macOS/Windows file systems the two are one directory, so the store (or a copy
        of it there) would hold one video's features under the other's id."""
        names = os.listdir(self._videos)
        if video_id in names:
            return
        key = folded_video_id(video_id)
        twin = next((n for n in names if not n.startswith(".") and n != "zarr.json" and folded_video_id(n) == key),
                    None)
        if twin is not None:
            raise StoreError(f"video {video_id!r}: the store holds {twin!r}, the same id up to case or Unicode "
                             "normalisation (one directory on macOS/Windows file systems); give it another id")

    def _shape_problem(self, video_id: str, name: str, want: tuple) -> str | None:
        """The array's recorded shape when it is not ``want`` (checked before reading it: a corrupted shape of
        10^12 rows made verify allocate petabytes); None when it fits or is unreadable (reading reports that)."""
        adir = self._videos / video_id / name
        try:
            shape = tuple(_read_json(adir / "zarr.json")["shape"])
        except (OSError, StoreError, KeyError, TypeError):
            return None
        if None in want or shape == want:
            return None
        return f"array shape {shape} in {adir / 'zarr.json'}, but the video has {want[0]} snippets (expected {want})"

    def _check_array(self, video_id: str, name: str, sha256: str | None) -> str | None:
        try:
            arr = self._read_array(video_id, name)
        except FileNotFoundError as e:
            return f"array missing: {e.filename or self._videos / video_id / name}"
        except StoreError as e:  # (a damaged chunk file or array metadata; the message names it)
            return getattr(e, "detail", str(e))
        got = hashlib.sha256(arr.tobytes()).hexdigest()
        if got == sha256:
            return None
        detail = f"content hash mismatch: recorded sha256 {str(sha256)[:12]}..., computed {got[:12]}..."
        absent = self._absent_chunks(self._videos / video_id / name)
        if absent:  # (zarr reads a missing chunk file as zeros: the likely cause)
            detail += f"; chunk file{'s' if len(absent) > 1 else ''} missing (read as zeros): " + ", ".join(
                str(p) for p in absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        return detail

    @staticmethod
    def _absent_chunks(adir: Path) -> list[Path]:
        try:
            ameta = _read_json(adir / "zarr.json")
            shape = ameta["shape"]
            step = ameta["chunk_grid"]["configuration"]["chunk_shape"][0]
        except (OSError, StoreError, KeyError, TypeError, IndexError):
            return []
        rest = "/0" * (len(shape) - 1)
        paths = [adir / "c" / f"{i}{rest}" for i in range(-(-int(shape[0]) // int(step)))]
        return [p for p in paths if not p.exists()]

    def _check_time(self, video_id: str, t: int) -> str | None:
        try:
            got = self._read_array(video_id, TIME_ARRAY)
        except FileNotFoundError as e:
            return f"array missing: {e.filename or self._videos / video_id / TIME_ARRAY}"
        except StoreError as e:
            return getattr(e, "detail", str(e))
        if got.shape != (t,):
            return f"time coordinate off: {got.shape[0] if got.ndim else got.shape} snippet times, expected {t}"
        want = np.array([self.grid.snippet_center_seconds(i) for i in range(t)], dtype=np.float64)
        off = np.flatnonzero(got != want)
        if off.size:
            i = int(off[0])
            absent = self._absent_chunks(self._videos / video_id / TIME_ARRAY)
            return (f"time coordinate off at {off.size} of {t} snippets: snippet {i} is at {float(got[i])!r} s, "
                    f"the grid says {float(want[i])!r} s" + (
                        f"; chunk file(s) missing (read as zeros): {', '.join(str(p) for p in absent[:3])}"
                        if absent else ""))
        return None

    # ----------------------------------------------------------------- writing
    def write_video(
        self,
        video_id: str,
        features: dict[str, np.ndarray],
        info: VideoInfo | None = None,
        provenance: dict[str, FeatureProvenance] | None = None,
        replace_all: bool = False,
        expect_version: str | None | object = ANY_VERSION,
        keep_info: bool = False,
    ) -> None:
        """Publish features of one video atomically, merged with the features it already has.

        Features given here replace stored ones of the same name; others are kept (hard-linked, not
        copied). ``replace_all`` drops everything stored first (e.g. when the source video changed).
        ``provenance`` must cover every feature given; ``info`` is required for a new video, and with
        ``keep_info`` it is used only then (a video already stored keeps its own).

        Concurrent writers: the merge happens under the video's lock, but a writer *plans* (what to compute,
        whether the source changed) before it. ``expect_version``: the ``video_version`` the plan was made
        on (None: the video was absent); another version under the lock raises :class:`StoreConflict`, so
        features of two different sources are never merged and a replacement never drops what another
        process added meanwhile.
        """
        validate_video_id(video_id)
        provenance = dict(provenance or {})
        locks = self._staging / "locks"
        with file_lock(locks / f"{video_id}.lock"):
            self._recover(video_id)
            current = self._videos / video_id
            self._refuse_case_twin(video_id)
            if expect_version is not ANY_VERSION:
                now = self._video_meta(video_id).get("version") if current.exists() else None
                if now != expect_version:
                    raise StoreConflict(
                        f"video {video_id!r}: " + ("deleted" if now is None else "written") + " by another process "
                        "since this write was planned; nothing written (plan again against the stored version)")
            old = None if replace_all or not current.exists() else self._video_meta(video_id)
            if keep_info and current.exists():
                info = None  # (decided here, under the lock: an importer must not replace an extracted video's)
            # T must agree with stored features only if some of them are kept
            kept = set() if old is None else (set(old["features"]) | ({AUDIO_MASK} if old.get("audio_mask") else set()))
            expected_t = old["num_snippets"] if kept - set(features) else None
            arrays = validate_features(video_id, features, self.feature_dims, expected_t)
            lost = sorted((kept - set(arrays)) & self.missing_arrays(video_id)) if old is not None else []
            if lost:  # (keeping them would publish metadata for arrays that are not there)
                redo = sorted({"vggish" if n == AUDIO_MASK else n for n in lost})  # (the mask comes with vggish)
                raise StoreError(
                    f"video {video_id!r}: stored feature(s) {lost} have no array on disk ({current / lost[0]}); "
                    f"the store is damaged: recompute them in the same write (`clipae extract` with "
                    f"{','.join(redo)} in --features) or rewrite the whole video (replace_all)"
                )
            for name in arrays:
                if name != AUDIO_MASK and name not in provenance:
                    raise StoreError(f"video {video_id!r}: no provenance given for feature {name!r}")
            if "vggish" in arrays and AUDIO_MASK not in arrays:
                raise StoreError(f"video {video_id!r}: 'vggish' must be written together with '{AUDIO_MASK}'")
            if info is None:
                if old is None:
                    raise StoreError(f"video {video_id!r}: VideoInfo is required for a video not yet in the store")
                info = VideoInfo.from_dict(old["info"])
            t = next(iter(arrays.values())).shape[0]

            tmp = self._staging / "tmp" / f"{video_id}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
            group = zarr.open_group(LocalStore(tmp), mode="w", zarr_format=3)
            feat_meta: dict[str, dict] = {}
            keep_mask = False
            if old is not None:
                for name, fmeta in old["features"].items():
                    if name not in arrays:
                        link_or_copy_tree(current / name, tmp / name)
                        feat_meta[name] = fmeta
                keep_mask = bool(old.get("audio_mask")) and AUDIO_MASK not in arrays
                if keep_mask:
                    link_or_copy_tree(current / AUDIO_MASK, tmp / AUDIO_MASK)
            for name, arr in arrays.items():
                self._write_array(group, name, arr)
                if name != AUDIO_MASK:
                    feat_meta[name] = {
                        "dim": int(arr.shape[1]),
                        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
                        "provenance": provenance[name].to_dict(),
                    }
            times = np.array([self.grid.snippet_center_seconds(i) for i in range(t)], dtype=np.float64)
            self._write_array(group, TIME_ARRAY, times)
            mask_sha = (
                hashlib.sha256(arrays[AUDIO_MASK].tobytes()).hexdigest()
                if AUDIO_MASK in arrays
                else (old or {}).get("audio_mask") if keep_mask else None
            )
            meta = {
                "format_version": FORMAT_VERSION,
                "video_id": video_id,
                "info": info.to_dict(),
                "num_snippets": int(t),
                "grid": self.grid.to_dict(),
                "features": feat_meta,
                "audio_mask": mask_sha,
                "written": utc_now(),
                "version": uuid.uuid4().hex,
            }
            meta["fingerprint"] = _video_fingerprint(meta)
            group.attrs.update({VIDEO_ATTR: meta})
            self._publish(tmp, current)

    def _write_array(self, group: zarr.Group, name: str, arr: np.ndarray) -> None:
        if arr.ndim == 2:
            chunks, dims = (min(self.chunk_snippets, arr.shape[0]), arr.shape[1]), ("time", f"{name}_dim")
        else:
            chunks, dims = (min(self.chunk_snippets, arr.shape[0]),), ("time",)
        compressors = self.codec.zarr_compressors() if arr.dtype == np.float32 else ()
        a = group.create_array(
            name, shape=arr.shape, chunks=chunks, dtype=arr.dtype, compressors=compressors,
            fill_value=0, dimension_names=dims,
        )
        a[...] = arr

    def _publish(self, tmp: Path, current: Path) -> None:
        if not current.exists():
            os.rename(tmp, current)  # atomic; fails (ENOTEMPTY/EEXIST) rather than merge
            return
        if self._exchange_ok is None:
            self._exchange_ok = exchange_supported(self._staging / "tmp")
        if self._exchange_ok and exchange(tmp, current):
            shutil.rmtree(tmp)  # tmp now holds the previous version
            return
        # No atomic exchange on this filesystem: move the old version aside, then publish. A crash in
        # between leaves the video absent (never partial); `_recover` restores the old version.
        trash = self._staging / "trash" / tmp.name
        os.rename(current, trash)
        os.rename(tmp, current)
        shutil.rmtree(trash)

    def recover(self) -> list[str]:
        """Clean up after killed writers, store-wide (a write does it only for its own video): for every video
        with leftovers in ``_staging``, under that video's lock, restore it if a writer died between its two
        renames and drop half-built copies. Returns the ids that had leftovers."""
        for scratch in self.path.glob(".create-*"):  # a creator killed before it finished (plain zarr lists these
            # as groups); a live one needs milliseconds, so only copies older than a minute are dropped
            try:
                if time.time() - scratch.stat().st_mtime > 60:
                    shutil.rmtree(scratch, ignore_errors=True)
            except FileNotFoundError:
                pass
        ids = set()
        for sub in ("tmp", "trash"):
            d = self._staging / sub
            for p in d.iterdir() if d.is_dir() else ():
                parts = p.name.rsplit(".", 2)
                if len(parts) == 3:
                    ids.add(parts[0])
        for vid in sorted(ids):
            try:
                validate_video_id(vid)
            except StoreError:
                continue  # not ours
            with file_lock(self._staging / "locks" / f"{vid}.lock"):  # (a live writer holds it: wait for it)
                self._recover(vid)
        return sorted(ids)

    def _recover(self, video_id: str) -> None:
        """Under the video's lock: clean what a killed writer of this video left behind."""
        current = self._videos / video_id
        trash_dir = self._staging / "trash"

        def mine(d: Path) -> list[Path]:
            return [p for p in d.glob(f"{video_id}.*.*") if p.name.rsplit(".", 2)[0] == video_id]

        leftovers = sorted(mine(trash_dir), key=lambda p: p.stat().st_mtime)
        if not current.exists() and leftovers and (leftovers[-1] / "zarr.json").exists():
            os.rename(leftovers.pop(), current)
        for p in leftovers + mine(self._staging / "tmp"):
            shutil.rmtree(p, ignore_errors=True)

    def delete_video(self, video_id: str) -> None:
        validate_video_id(video_id)
        with file_lock(self._staging / "locks" / f"{video_id}.lock"):
            current = self._videos / video_id
            if not current.exists():
                raise StoreError(f"video {video_id!r}: not in store {self.path}")
            trash = self._staging / "trash" / f"{video_id}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
            os.rename(current, trash)
            # zarr.json first: a writer killed during the removal must leave a copy that recovery drops, not one
            # it restores as the video with some arrays gone (recovery restores a trash copy with zarr.json)
            (trash / "zarr.json").unlink(missing_ok=True)  # (a damaged video may have none)
            shutil.rmtree(trash)


def _check_can_become_store(path: Path) -> None:
    """A new store goes into a new or empty directory: never beside a user's files (``--store ~/data``). What a
    concurrent creator of the same store may have put there already (its skeleton groups) is allowed."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"store {path}: exists and is not a directory; give a new or empty directory")
    if not path.is_dir():
        return
    # (what a concurrent creator makes, its root zarr.json included; hidden files and a fresh volume's lost+found)
    ours = lambda p: (p.name.startswith(".") or p.name in ("zarr.json", "lost+found")  # noqa: E731
                      or (p.name in ("videos", "_staging") and (p / "zarr.json").is_file()))
    others = sorted(p.name for p in path.iterdir() if not ours(p))
    if others:
        raise StoreError(f"store {path}: a directory holding other files ({len(others)}, e.g. {others[0]!r}) is not a "
                         "feature store; give a new or empty directory")


def mixed_configs_message(configs: dict[str, dict[str, list[str]]], features: Iterable[str] | None = None) -> str | None:
    """A readable account of the features (of ``features``, default all) whose videos were made in more than
    one way, from :meth:`FeatureStore.feature_configs`; None when every feature is made one way."""
    lines = []
    for f in sorted(configs if features is None else set(features) & set(configs)):
        groups = configs[f]
        if len(groups) < 2:
            continue
        lines.append(f"{f}: made {len(groups)} different ways across the store's videos:")
        for key, vids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            shown = ", ".join(vids[:3]) + (", ..." if len(vids) > 3 else "")
            lines.append(f"    {len(vids)} video{'s' if len(vids) > 1 else ''} ({shown}): {key}")
    return "\n".join(lines) or None


def _video_fingerprint(meta: dict) -> str:
    """Content identity of a video: feature hashes, how they were made, and the source. Not times."""
    core = {
        "info": meta["info"],
        "grid": meta["grid"],
        "audio_mask": meta["audio_mask"],
        "features": {
            k: {
                "sha256": v["sha256"],
                **{p: v["provenance"].get(p) for p in ("extractor", "extractor_version", "weights_sha256",
                                                       "random_init", "preprocess_hash")},
            }
            for k, v in sorted(meta["features"].items())
        },
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()
