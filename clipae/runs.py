"""Run records: one immutable directory per pipeline run.

Layout: ``<runs_dir>/<YYYY-MM-DD>/<run-id>/`` (run-id = the Prefect flow-run id) holding
``record.json`` (config, code revision, store fingerprint, metrics summary, file
hashes) plus whatever the run produced (checkpoints, predictions, metrics, plots).
A record is assembled in ``<runs_dir>/.staging/<run-id>/`` and published with one
``os.rename`` (atomic on one filesystem), then every file and directory is made
read-only; so a crashed run never leaves a half-written record, and a published one
is never modified. Readers only ever see ``record.json`` of complete records.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import stat
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipae import REPO_ROOT

_log = logging.getLogger(__name__)

RUNS_DIR_ENV = "CLIPAE_RUNS_DIR"
RECORD_FILE = "record.json"
STAGING = ".staging"


def default_runs_dir() -> Path:
    """``$CLIPAE_RUNS_DIR`` or ``<repo>/runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV, str(REPO_ROOT / "runs")))


def code_revision(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` (+ ``-dirty`` with uncommitted changes), or ``"unknown"``."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class RunRecordWriter:
    """Builds a run record in a staging directory; :meth:`publish` makes it final and read-only."""

    def __init__(self, run_id: str, runs_dir: str | Path | None = None, started: dt.datetime | None = None):
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"unsafe run id {run_id!r}")
        self.run_id = run_id
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.started = started or dt.datetime.now(dt.timezone.utc)
        self.staging = self.runs_dir / STAGING / run_id
        # A lock beside the staging directory, held while this writer lives (the kernel frees it when the
        # process dies, SIGKILL included): a later writer drops staging directories whose lock is free, i.e.
        # of runs killed before they could publish (their checkpoints add up to tens of MB each).
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _try_lock(self.staging.parent / f"{run_id}.lock")  # (taken before the directory exists)
        if self._lock is None:
            raise RuntimeError(f"run {run_id}: another live process is writing its record ({self.staging})")
        _drop_dead_staging(self.staging.parent, keep=run_id)
        if self.staging.exists():  # leftover of a crashed attempt of this same run: start clean
            _make_writable(self.staging)
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.published: Path | None = None

    @property
    def path(self) -> Path:
        """Where producers (training, prediction) should write their files."""
        return self.staging

    def write_json(self, relative: str, obj: Any) -> Path:
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(obj, indent=2, default=_json_default))
        return target

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def add_file(self, relative: str, source: str | Path) -> Path:
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return target

    def final_path(self) -> Path:
        date = self.started.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")
        return self.runs_dir / date / self.run_id

    def publish(self, record: dict[str, Any]) -> Path:
        """Write record.json (with file hashes), rename into place, make everything read-only."""
        files = {
            str(p.relative_to(self.staging)): _sha256(p)
            for p in sorted(self.staging.rglob("*"))
            if p.is_file()
        }
        full = {
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "published": dt.datetime.now(dt.timezone.utc).isoformat(),
            **record,
            "files": files,
        }
        self.write_json(RECORD_FILE, full)
        final = self.final_path()
        final.parent.mkdir(parents=True, exist_ok=True)

        names = set()  # every published run's name, under any date (a retry after midnight UTC is another date)
        for d in self.runs_dir.iterdir():
            try:
                if d.is_dir() and not d.name.startswith("."):
                    names.update(os.listdir(d))
            except OSError:  # (an unreadable date folder: list_runs skips it too)
                continue

        def taken(name: str) -> bool:
            return name in names or (final.parent / name).exists()

        if taken(self.run_id):  # a retry of the same flow run: never overwrite a published record
            k = 2
            while taken(f"{self.run_id}-{k}"):
                k += 1
            final = final.parent / f"{self.run_id}-{k}"
        os.rename(self.staging, final)
        _make_read_only(final)
        self.published = final
        (self.staging.parent / f"{self.run_id}.lock").unlink(missing_ok=True)
        self._lock.close()
        return final


#: A staging directory without a lock file (written before the locks existed) counts as dead after this long.
UNLOCKED_STAGING_MAX_AGE_S = 24 * 3600


def _try_lock(path: Path):
    """An open file holding an exclusive flock on ``path``, or None if another live writer holds it."""
    fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def _drop_dead_staging(root: Path, keep: str) -> None:
    """Remove the staging directories of writers that died (their lock is free); never a live writer's."""
    for d in root.iterdir():
        if not d.is_dir() or d.name == keep:
            continue
        lock_path = root / f"{d.name}.lock"
        try:
            if not lock_path.exists() and time.time() - d.stat().st_mtime < UNLOCKED_STAGING_MAX_AGE_S:
                continue  # (no lock file: maybe a writer of an older version, still running)
            fh = _try_lock(lock_path)
            if fh is None:
                continue  # alive
            try:
                if d.exists():
                    _make_writable(d)
                    shutil.rmtree(d, ignore_errors=True)
                    _log.info("dropped %s: the staging directory of a run that ended without publishing", d)
                lock_path.unlink(missing_ok=True)
            finally:
                fh.close()
        except OSError:
            continue  # (another writer sweeping at the same time)


def _make_read_only(root: Path) -> None:
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        mode = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if p.is_dir():
            mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        os.chmod(p, mode)
    os.chmod(root, 0o555)


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


@dataclass(frozen=True)
class RunRecord:
    """A published record, as read back by ``clipae runs``."""

    path: Path
    data: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def date(self) -> str:
        return self.path.parent.name

    @property
    def map_by_tiou(self) -> dict[str, float]:
        """tIoU ("0.30", two decimals whatever the record wrote: "0.3" and "0.30" are one row) -> mAP; entries
        that are not numbers are left out (a record edited or written by another tool must not break listing)."""
        metrics = self.data.get("metrics")
        table = metrics.get("map_by_tiou") if isinstance(metrics, dict) else None
        out: dict[str, float] = {}
        for k, v in (table.items() if isinstance(table, dict) else ()):
            key, value = _as_float(k), _as_float(v)
            if key is not None and value is not None:
                out.setdefault(f"{key:.2f}", value)
        return out

    @property
    def average_map(self) -> float | None:
        metrics = self.data.get("metrics")
        return _as_float(metrics.get("average_map")) if isinstance(metrics, dict) else None


def _as_float(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def list_runs(runs_dir: str | Path | None = None) -> list[RunRecord]:
    """Every published record, oldest first (staging directories are never listed)."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    records = []
    if not root.is_dir():
        return records
    for day in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            runs = sorted(day.iterdir())
        except OSError as e:  # (one unreadable folder must not hide every other run)
            _log.warning("skipping run records under %s: unreadable (%s)", day, e.strerror or e)
            continue
        for run in runs:
            rec = run / RECORD_FILE
            try:
                if not rec.is_file():  # (a staging or unrelated folder)
                    continue
                data = json.loads(rec.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:  # (unreadable folder or file)
                data = e
            if not isinstance(data, dict):  # (one bad record must not hide every other run)
                why = data if isinstance(data, Exception) else f"a JSON {type(data).__name__}, not an object"
                _log.warning("skipping run record %s: unreadable (%s)", rec, why)
                continue
            records.append(RunRecord(run, data))
    records.sort(key=lambda r: (str(r.data.get("started") or ""), r.run_id))
    return records


def find_run(run_id: str, runs_dir: str | Path | None = None) -> RunRecord:
    """A record by full id or unique prefix, optionally as ``DATE/ID`` (as `clipae runs list` prints them)."""
    records = list_runs(runs_dir)
    date, _, ident = run_id.rpartition("/")
    if date:
        records = [r for r in records if r.date == date]
    matches = [r for r in records if r.run_id == ident]
    if not matches:
        matches = [r for r in records if r.run_id.startswith(ident)]
    if len(matches) != 1:
        same_id = len({r.run_id for r in matches}) < len(matches)  # (one id under two dates: name them DATE/ID)
        names = sorted(f"{r.date}/{r.run_id}" if same_id else r.run_id for r in matches)
        raise KeyError(
            f"no run record matches {run_id!r}" if not matches
            else f"{run_id!r} is ambiguous: {len(matches)} runs match (" + ", ".join(names[:10])
            + (", ..." if len(matches) > 10 else "") + ")" + ("; give DATE/ID" if same_id else "")
        )
    return matches[0]
