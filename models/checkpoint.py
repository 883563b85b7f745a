"""Checkpoints: plain state dicts + the JSON config, written atomically, read with weights_only=True."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

MODEL_FILE = "model.pt"        # final weights + metadata (what `clipae predict` reads)
RESUME_FILE = "last.pt"        # training state after the last finished epoch
CONFIG_FILE = "config.json"


#: What a training run writes in its directory (besides config.json), dropped when a fresh run starts there:
#: a run stopped early must not leave the previous run's model beside its own config.
RUN_OUTPUTS = (MODEL_FILE, RESUME_FILE, "train_log.json", "train_clusters.json", "inputs.json",
               "predictions.json", "evaluation.json")  # (the last two: an ablation row's, made from the model)

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # (read once, at import: mkstemp makes 0600 files; ours get the usual 0644 under umask 022)


def clear_run_dir(out: Path, fresh: bool) -> None:
    """Drop what a writer killed mid-write left (``.<name>.<random>`` temporaries: SIGTERM does not run the
    cleanup) and, for a ``fresh`` run, the previous run's outputs (RUN_OUTPUTS)."""
    out = Path(out)
    for name in (*RUN_OUTPUTS, CONFIG_FILE):
        for tmp in out.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)
        if fresh and name != CONFIG_FILE:
            (out / name).unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over the target: a crash
    mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointError(ValueError):
    """A file that is not a checkpoint of ours (or a damaged one)."""


def load(path: Path, device: str | torch.device = "cpu", required: tuple[str, ...] = ()) -> dict:
    """The saved dict; a file torch cannot read, or one without the ``required`` keys, is a CheckpointError
    naming the file (and never torch's advice to load it with weights_only=False)."""
    from extractors.weights import torch_load_reason

    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, MemoryError):  # (a missing file, a read error, no memory: not the file's content)
        raise
    except Exception as e:  # noqa: BLE001 -- pickle/zip/torch raise many types for a file that is not ours
        raise CheckpointError(f"{path}: not a clipae checkpoint or damaged ({torch_load_reason(e)})") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a clipae checkpoint (no {', '.join(map(repr, missing))}; "
                              f"`clipae train` writes {MODEL_FILE} and {RESUME_FILE} in its run directory)")
    return state


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} not found (train first: `clipae train ... --out RUN_DIR`)")
    return p
