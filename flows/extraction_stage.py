"""The mapped extraction stage shared by ``extract-and-train`` and ``reextract``.

One task per video; failures are collected (never raised), so one bad video does not
fail the others, and a live progress artifact advances as each task finishes. The GPU's
concurrency limit is created first if it is missing (flows/limits.py), and the networks are
loaded before any video: missing weights or an unusable device fail the run once, with one
message, instead of failing every video. Each failure says whether the video itself is at fault
(``video_fault``: a VideoError, which reextract remembers until the file changes) or not (a
run-wide or transient problem: retried on the next run).
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from prefect import get_run_logger, unmapped

from flows import steps, tasks
from flows.artifacts import ProgressReporter
from flows.limits import ensure_gpu_limit
from extractors.errors import ResourceError, VideoError


def run_extraction(
    todo: list[steps.PlannedVideo], store, config, limit_name: str, progress_key: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Extract every planned video; returns (per-video reports, failures)."""
    progress = ProgressReporter(progress_key, len(todo), "videos extracted")
    if not todo:
        return [], []
    created = ensure_gpu_limit(limit_name)
    if created:
        get_run_logger().info(created)
    steps.get_extractors(config)  # (the tasks share this process's cached networks)
    # Set when this run is stopped (a Prefect cancel or the worker's SIGTERM arrive here, in the flow's thread,
    # as a BaseException): the extraction threads, which the task runner waits for before the process ends,
    # then stop at their next window instead of extracting their videos to the end (and past the grace period,
    # into a SIGKILL), and tasks still waiting for a slot start nothing.
    cancel = threading.Event()
    futures = tasks.extract_video.map(todo, store=unmapped(store), config=unmapped(config),
                                      limit_name=unmapped(limit_name), cancel=unmapped(cancel))
    try:
        return _collect(futures, todo, progress, cancel)
    except BaseException:
        cancel.set()
        raise


def _collect(futures, todo: list[steps.PlannedVideo], progress: ProgressReporter, cancel: threading.Event
             ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Reports and failures as the tasks finish. The first failure to write the store (disk full, read-only:
    a ResourceError of stage "store") stops the videos not yet done: each would decode and compute for
    minutes, then fail at its write; those are listed as not extracted, not as the videos' faults."""
    item_of = {f.task_run_id: item for f, item in zip(futures, todo)}
    reports: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    stopped_by: str | None = None
    for fut in finished(futures):
        item = item_of[fut.task_run_id]
        fut.wait()  # caches the final state locally (the API's view may still lag behind)
        state = fut.state
        if state.is_completed():
            reports.append(fut.result())
        elif state.is_cancelled() and stopped_by is not None:
            failures.append({"video_id": item.video_id, "source": item.path, "video_fault": False,
                             "error": f"not extracted: the run stopped extracting when {stopped_by}"})
        else:
            exc = state.result(raise_on_failure=False)
            message = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(state.message)
            failures.append({"video_id": item.video_id, "source": item.path, "error": message,
                             "video_fault": isinstance(exc, VideoError)})
            if isinstance(exc, ResourceError) and exc.stage == "store" and stopped_by is None:
                stopped_by = f"writing {item.video_id} to the store failed ({exc.reason})"
                cancel.set()
        progress.advance()
    reports.sort(key=lambda r: r["video_id"])
    failures.sort(key=lambda f: f["video_id"])
    return reports, failures


#: How often the flow's thread wakes while it waits for the extraction tasks
WAKE_SECONDS = 0.5


def finished(futures):
    """The futures as they finish, like Prefect's ``as_completed``, but waiting in short timed waits. A stop
    signal (the worker's SIGTERM on a cancel) may be delivered to any thread, and Python runs its handler in
    this, the main, thread only once that thread returns from what it waits in: as_completed's untimed wait
    kept a cancelled run going until its running extraction finished (live: 27 s of the 30 s grace)."""
    done: queue.SimpleQueue = queue.SimpleQueue()
    for fut in futures:
        fut.add_done_callback(done.put)  # (called at once for a finished future)
    for _ in range(len(futures)):
        while True:
            try:
                yield done.get(timeout=WAKE_SECONDS)
                break
            except queue.Empty:
                continue
