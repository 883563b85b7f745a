"""Flow ``reextract``: extract only videos that are new or changed since the last run.

"Changed" compares each source's fingerprint with the one recorded in the store (the
store is the authority on what was extracted). A small state file beside the store,
``<store>.reextract.json``, remembers what arrived since training was last triggered
and which (video, fingerprint) pairs failed through their own fault (a VideoError), so a
broken file is not retried on every schedule tick until it changes; a failure that is not
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


def state_path(store_path: str | Path) -> Path:
    p = resolve_path(store_path)
    return p.with_name(p.name + ".reextract.json")


def load_state(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"pending_new_videos": [], "failed": {}, "runs": []}


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)  # atomic: a crash never leaves half a state file


@contextmanager
def store_lock(store_path: str | Path):
    """Yield True holding ``<store>.reextract.lock`` (flock: the kernel frees it when a killed run's process
    ends), False when another run holds it. Two runs at once would both extract, both trigger training, and
    the later state write would drop the earlier run's entries."""
    p = resolve_path(store_path)
    lock = p.with_name(p.name + ".reextract.lock")
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
    state = load_state(spath)

    st = steps.open_dataset_store(p.store, ds, cfg)  # (after the source and weights: no empty store for a typo)
    plan = tasks.plan_extraction(st, videos, list(p.features))  # no config: feature-setting changes are
    # extract-and-train's business (it re-plans stale features); reextract reacts to the sources only
    arrived = [item for item in plan.todo if item.reason in ("new", "changed")]
    known_bad = [i.video_id for i in arrived if state["failed"].get(i.video_id) == i.source_fingerprint]
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

    fp_of = {i.video_id: i.source_fingerprint for i in todo}
    for f in failures:
        if f.get("video_fault"):  # the file's own problem: not retried until it changes
            state["failed"][f["video_id"]] = fp_of[f["video_id"]]
    not_theirs = [f for f in failures if not f.get("video_fault")]
    ready = [r["video_id"] for r in reports]  # in the store now (this run or a concurrent extract-and-train)
    done = steps.computed_videos(reports)  # what this run extracted
    for vid in ready:
        state["failed"].pop(vid, None)
    pending = sorted(set(state["pending_new_videos"]) | set(ready))
    triggered = None
    if p.trigger_deployment and len(pending) >= p.trigger_min_new_videos:
        from prefect.deployments import run_deployment

        params = dict(p.trigger_parameters)
        if p.trigger_deployment.startswith("extract-and-train/"):  # (its own defaults may name another store)
            params = {"store": p.store, "source": p.source, "dataset": p.dataset, **params}
        fr = run_deployment(p.trigger_deployment, parameters=params or None, timeout=0, as_subflow=False)
        triggered = {"deployment": p.trigger_deployment, "flow_run_id": str(fr.id), "new_videos": len(pending)}
        log.info(f"started {p.trigger_deployment} (flow run {fr.id}) after {len(pending)} new videos")
        pending = []
    run = {
        "flow_run_id": current_run_id(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "extracted": done, "failed": [f["video_id"] for f in failures], "known_bad": known_bad,
        "triggered": triggered,
    }
    state["pending_new_videos"] = pending
    state["runs"] = (state["runs"] + [run])[-50:]  # bounded history
    state["last_run"] = run
    save_state(spath, state)

    artifacts.publish_markdown(key("summary"), _summary_md(ds.name, len(videos), done, failures, known_bad, pending,
                                                           triggered), "What this reextract run did")
    artifacts.publish_failures(key("failures"), failures)
    if not_theirs:  # the run failed, not those videos: say so in the run's state (they are retried next run)
        raise RuntimeError(
            f"{len(not_theirs)} video(s) failed for a reason that is not the file's (retried on the next run): "
            + "; ".join(f"{f['video_id']}: {f['error']}" for f in not_theirs[:5]) + (" ..." if len(not_theirs) > 5 else ""))
    return {"extracted": done, "failures": failures, "known_bad": known_bad, "pending_new_videos": pending,
            "triggered": triggered}


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
