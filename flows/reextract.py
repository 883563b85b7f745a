"""Flow ``reextract``: extract only videos that are new or changed since the last run.

"Changed" compares each source's fingerprint with the one recorded in the store (the
store is the authority on what was extracted). A small state file beside the store,
``<store>.reextract.json``, remembers what arrived since training was last triggered
and which files failed through their own fault (a VideoError; by fingerprint and modification
time), so a broken file is not retried on every schedule tick until it changes; a failure that is not
the video's (missing weights, no GPU, a transient error) is not remembered, and fails the
run, so the next run tries again. One run per store at a time (a lock file beside it: a
second run finds it held and does nothing). With ``trigger_deployment`` set, the flow
starts that deployment (``run_deployment``, not waiting) once ``trigger_min_new_videos``
arrived; an ``extract-and-train/...`` deployment gets this run's store, source and dataset
unless ``trigger_parameters`` say otherwise.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts, steps, tasks
from flows.extract_and_train import EXTRACT_WORKERS, current_run_id
from flows.extraction_stage import run_extraction
from flows.params import ALL_FEATURES, ExtractOptions, FeatureName, ReextractParams, gpu_limit_name, resolve_path

FLOW_NAME = "reextract"


def _store_file(store_path: str | Path, suffix: str) -> Path:
    """``<store><suffix>`` beside the store's real path: a store reached through a symlink shares its lock
    and state with the store itself (else two runs, one per name, both extract and both count)."""
    p = resolve_path(store_path).resolve()
    return p.with_name(p.name + suffix)


def state_path(store_path: str | Path) -> Path:
    return _store_file(store_path, ".reextract.json")


def _fresh_state() -> dict[str, Any]:
    return {"pending_new_videos": [], "failed": {}, "runs": []}


def _state_problem(raw: Any) -> str | None:
    """What is wrong with a state file's content (None: usable)."""
    if not isinstance(raw, dict):
        return f"not a JSON object but a {type(raw).__name__}"
    pending, failed, runs = raw.get("pending_new_videos", []), raw.get("failed", {}), raw.get("runs", [])
    if not (isinstance(pending, list) and all(isinstance(v, str) for v in pending)):
        return "pending_new_videos is not a list of video ids"
    if not (isinstance(failed, dict) and all(isinstance(v, str) for v in failed.values())):
        return "failed is not a mapping of video id to file stamp"
    if not isinstance(runs, list):
        return "runs is not a list"
    return None


def load_state(path: Path, warn=None) -> dict[str, Any]:
    """The state file's content. One that cannot be read or makes no sense (cut off by a full disk, edited
    by hand) is moved aside to ``<name>.corrupt-<time>`` with a warning, and the run starts afresh: the
    store, not this file, says what is extracted, so all that is lost is the count of videos since the last
    training trigger and the list of files that failed before (each is tried once more)."""
    if not path.exists() and not path.is_symlink():
        return _fresh_state()
    try:
        text = path.read_bytes()
    except OSError as e:  # (a permission mistake, an I/O error, a directory there: not to be thrown away)
        raise RuntimeError(f"cannot read the reextract state file {path}: {e.strerror or e}; fix it (or remove "
                           "it: the next run then starts afresh)") from None
    try:
        raw = json.loads(text.decode("utf-8"))
        problem = _state_problem(raw)
    except ValueError as e:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        problem = f"unreadable: {type(e).__name__}: {e}"
    if problem is None:
        return {**_fresh_state(), **raw}
    aside = path.with_name(f"{path.name}.corrupt-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}")
    try:
        os.replace(path, aside)
    except OSError as e:
        raise RuntimeError(f"reextract state file {path} is unusable ({problem}) and could not be moved aside "
                           f"({e.strerror or e}); remove it, and the next run starts afresh") from None
    (warn or print)(f"reextract state file {path} was unusable ({problem}); moved to {aside.name} and starting "
                    "afresh: new videos are counted towards the training trigger from now, and files that failed "
                    "before are tried once more")
    return _fresh_state()


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)  # atomic: a crash never leaves half a state file


@contextmanager
def store_lock(store_path: str | Path):
    """Yield True holding ``<store>.reextract.lock`` (flock: the kernel frees it when a killed run's process
    ends), False when another run holds it. Two runs at once would both extract, both trigger training, and
    the later state write would drop the earlier run's entries."""
    lock = _store_file(store_path, ".reextract.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@flow(name=FLOW_NAME, description=__doc__.splitlines()[0], task_runner=ThreadPoolTaskRunner(max_workers=EXTRACT_WORKERS))
def reextract(
    source: str,
    store: str,
    dataset: str,
    features: list[FeatureName] = list(ALL_FEATURES),
    weights_dir: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    extract: ExtractOptions | None = None,
    trigger_deployment: str | None = None,
    trigger_min_new_videos: int = 10,
    trigger_parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    p = ReextractParams(
        source=source, store=store, dataset=dataset, features=features, weights_dir=weights_dir, device=device,
        allow_random_init=allow_random_init, extract=extract or ExtractOptions(),
        trigger_deployment=trigger_deployment, trigger_min_new_videos=trigger_min_new_videos,
        trigger_parameters=trigger_parameters or {},
    )
    log = get_run_logger()
    ds = steps.load_dataset(p.dataset)
    cfg = p.extract.build(p.features, p.weights_dir, p.device, p.allow_random_init, ds.grid)
    check_trigger(p)  # (now, not after hours of extraction)
    videos = tasks.discover_videos(p.source)  # (before the lock: a wrong source creates nothing beside the store)
    with store_lock(p.store) as held:
        if not held:
            log.warning(f"another reextract run is working on {resolve_path(p.store)} (it holds "
                        f"{state_path(p.store).with_suffix('.lock').name}); this run does nothing")
            return {"extracted": [], "failures": [], "pending_new_videos": None, "triggered": None,
                    "skipped": "another reextract run holds the store's lock"}
        return _reextract_locked(p, ds, cfg, videos, log)


def _reextract_locked(p: ReextractParams, ds, cfg, videos: list[tuple[str, str]], log) -> dict[str, Any]:
    spath = state_path(p.store)
    state = load_state(spath, log.warning)

    st = steps.open_dataset_store(p.store, ds, cfg)  # (after the source and weights: no empty store for a typo)
    plan = tasks.plan_extraction(st, videos, list(p.features))  # no config: feature-setting changes are
    # extract-and-train's business (it re-plans stale features); reextract reacts to the sources only
    arrived = [item for item in plan.todo if item.reason in ("new", "changed")]
    known_bad = [i.video_id for i in arrived if _failed_before(state["failed"].get(i.video_id), i)]
    todo = [i for i in arrived if i.video_id not in known_bad]
    log.info(f"{len(videos)} videos; {len(todo)} new or changed: {[i.video_id for i in todo]}"
             + (f"; {len(known_bad)} failed before and are unchanged, not retried: {known_bad}" if known_bad else ""))
    key = lambda *parts: artifacts.artifact_key(FLOW_NAME, ds.name, *parts)  # noqa: E731
    try:
        reports, failures = run_extraction(todo, st, cfg, gpu_limit_name(p.device), key("progress"))
    except BaseException:  # stopped (cancel, SIGTERM) or failed midway: the videos it did publish are no longer
        # "new" to the next run's plan, so they are counted for training now or never
        _remember_published(spath, state, st, todo, log)
        raise

    item_of = {i.video_id: i for i in todo}
    for f in failures:
        if f.get("video_fault"):  # the file's own problem: not retried until it changes
            state["failed"][f["video_id"]] = file_stamp(item_of[f["video_id"]])
    not_theirs = [f for f in failures if not f.get("video_fault")]
    ready = [r["video_id"] for r in reports]  # in the store now (this run or a concurrent extract-and-train)
    done = steps.computed_videos(reports)  # what this run extracted
    for vid in ready:
        state["failed"].pop(vid, None)
    pending = sorted(set(state["pending_new_videos"]) | set(ready))
    run = {
        "flow_run_id": current_run_id(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "extracted": done, "failed": [f["video_id"] for f in failures], "known_bad": known_bad,
        "triggered": None,
    }
    state["pending_new_videos"] = pending
    state["runs"] = (state["runs"] + [run])[-50:]  # bounded history
    state["last_run"] = run
    save_state(spath, state)  # (first: the videos count even if starting the training below fails)
    triggered, trigger_error = None, None
    if p.trigger_deployment and len(pending) >= p.trigger_min_new_videos:
        from prefect.deployments import run_deployment

        try:
            fr = run_deployment(p.trigger_deployment, parameters=trigger_parameters(p) or None, timeout=0,
                                as_subflow=False)
        except Exception as e:  # noqa: BLE001 -- the new videos stay pending: the next run triggers again
            trigger_error = (f"could not start {p.trigger_deployment} ({type(e).__name__}: {e}); the "
                             f"{len(pending)} new videos stay counted for the next run")
            log.error(trigger_error)
        else:
            triggered = {"deployment": p.trigger_deployment, "flow_run_id": str(fr.id), "new_videos": len(pending)}
            log.info(f"started {p.trigger_deployment} (flow run {fr.id}) after {len(pending)} new videos")
            pending = []
            state["pending_new_videos"], run["triggered"] = pending, triggered
            save_state(spath, state)

    artifacts.publish_markdown(key("summary"), _summary_md(ds.name, len(videos), done, failures, known_bad, pending,
                                                           triggered), "What this reextract run did")
    artifacts.publish_failures(key("failures"), failures)
    problems = []
    if not_theirs:  # the run failed, not those videos: say so in the run's state (they are retried next run)
        problems.append(
            f"{len(not_theirs)} video(s) failed for a reason that is not the file's (retried on the next run): "
            + "; ".join(f"{f['video_id']}: {f['error']}" for f in not_theirs[:5]) + (" ..." if len(not_theirs) > 5 else ""))
    if trigger_error:
        problems.append(trigger_error)
    if problems:
        raise RuntimeError("\n".join(problems))
    return {"extracted": done, "failures": failures, "known_bad": known_bad, "pending_new_videos": pending,
            "triggered": triggered}


def file_stamp(item) -> str:
    """What reextract remembers of a file that failed through its own fault: its fingerprint (size, first and
    last MiB) and modification time, both as planned, so that a file rewritten in the middle only (a download
    completed into a preallocated file) counts as changed, and is tried again."""
    mtime = "?" if item.source_mtime_ns is None else item.source_mtime_ns  # (as planned, with the fingerprint)
    return f"{item.source_fingerprint} mtime_ns={mtime}"


def _failed_before(recorded: str | None, item) -> bool:
    """``item``'s file is the one that failed: same stamp, or (an entry from before stamps had the modification
    time) the same fingerprint."""
    if recorded is None:
        return False
    return recorded == file_stamp(item) if " mtime_ns=" in recorded else recorded == item.source_fingerprint


def trigger_parameters(p: ReextractParams) -> dict[str, Any]:
    """What the triggered run gets: ``trigger_parameters``, and for an ``extract-and-train/...`` deployment this
    run's store, source and dataset unless those say otherwise (its own defaults may name another store)."""
    params = dict(p.trigger_parameters)
    if p.trigger_deployment and p.trigger_deployment.startswith("extract-and-train/"):
        params = {"store": p.store, "source": p.source, "dataset": p.dataset, **params}
    return params


def check_trigger(p: ReextractParams) -> None:
    """``trigger_deployment`` names a deployment of this Prefect server, and the run it would start accepts
    ``trigger_parameters``: checked when the run starts, not when the trigger fires after hours of extraction
    (a run that cannot start, or an unknown key that Prefect's server lets through only to fail the run)."""
    name = p.trigger_deployment
    if not name:
        return
    parts = name.split("/")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ValueError(f"trigger_deployment {name!r}: must be '<flow name>/<deployment name>', "
                         "e.g. 'extract-and-train/thumos' (`prefect deployment ls` lists them)")
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from pydantic import ValidationError

    from flows.params import ExtractAndTrainParams

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ValueError(f"trigger_deployment {name!r}: no such deployment on the Prefect server at "
                             f"{client.api_url} (`prefect deployment ls` lists them)") from None
    params = trigger_parameters(p)
    merged = {**(deployment.parameters or {}), **params}
    schema = deployment.parameter_openapi_schema or {}
    known = schema.get("properties")
    if isinstance(known, dict) and known:
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"trigger_parameters: {name} has no parameter {unknown} (its parameters: {sorted(known)})")
        missing = sorted(set(schema.get("required") or []) - set(merged))
        if missing:
            raise ValueError(f"trigger_parameters: {name} needs {missing}, which neither its deployment nor "
                             "trigger_parameters give")
    if parts[0] == "extract-and-train":
        try:
            ExtractAndTrainParams(**merged)
        except ValidationError as e:
            raise ValueError(f"trigger_parameters: the run of {name} would not start: {e}") from None


def _remember_published(spath: Path, state: dict[str, Any], store, todo: list, log) -> None:
    """Add the planned videos now in the store from the planned file to the pending list, and save."""
    try:
        done = [i.video_id for i in todo if store.has_video(i.video_id)
                and store.video_info(i.video_id).source_fingerprint == i.source_fingerprint]
        state["pending_new_videos"] = sorted(set(state["pending_new_videos"]) | set(done))
        for vid in done:
            state["failed"].pop(vid, None)
        save_state(spath, state)
    except Exception as e:  # noqa: BLE001 -- (best effort while stopping: the original exception is what matters)
        log.warning(f"could not save {spath} while stopping ({type(e).__name__}: {e}): videos this run published "
                    "do not count towards training")


def _summary_md(dataset: str, n_videos: int, done: list[str], failures: list[dict], known_bad: list[str],
                pending: list[str], triggered: dict | None) -> str:
    lines = [
        f"# reextract: {dataset}", "",
        f"- videos discovered: {n_videos}",
        f"- extracted (new or changed): {len(done)}" + (f" — {', '.join(done[:20])}" if done else ""),
        f"- failed: {len(failures)}" + (f" — {', '.join(f['video_id'] for f in failures[:20])}" if failures else ""),
        f"- failed in an earlier run and unchanged since (not retried until the file changes): {len(known_bad)}"
        + (f" — {', '.join(known_bad[:20])}" if known_bad else ""),
        f"- new videos waiting for training: {len(pending)}",
        f"- training triggered: {triggered['deployment'] + ' (' + triggered['flow_run_id'] + ')' if triggered else 'no'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit("run via a deployment (prefect.yaml) or call reextract(source=..., store=..., dataset=...)")
