"""Flow ``extract-and-train``: videos -> features -> UTAL training -> detections -> mAP -> run record.

discover -> plan (what the store lacks or holds stale) -> extract per video (mapped,
global concurrency limit per device, retries on transient errors, failures collected)
-> check the store -> train -> predict -> evaluate -> artifacts -> run record.

Resuming after a crash is the plan step: every finished video was published
atomically to the store, so a re-run only extracts what is still missing.
"""
from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from clipae.runs import RunRecordWriter, code_revision
from flows import artifacts, report, steps, tasks
from flows.extraction_stage import run_extraction
from flows.params import (
    ALL_FEATURES,
    ExtractAndTrainParams,
    ExtractOptions,
    FeatureName,
    TrainingOptions,
    gpu_limit_name,
    resolve_path,
)

FLOW_NAME = "extract-and-train"
# Threads running mapped extraction tasks; the device's global concurrency limit decides how
# many of them extract at once (on the 2-core dev machine more threads only add contention).
EXTRACT_WORKERS = int(os.environ.get("CLIPAE_EXTRACT_WORKERS", "2"))


def current_run_id() -> str:
    """The Prefect flow-run id inside a flow run, else a fresh uuid (direct calls)."""
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            return str(flow_run.id)
    except Exception:  # pragma: no cover - runtime module always importable with prefect
        pass
    return str(uuid.uuid4())


@contextmanager
def _timed(timings: dict[str, float], name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t0


@flow(
    name=FLOW_NAME,
    description=__doc__.splitlines()[0],
    task_runner=ThreadPoolTaskRunner(max_workers=EXTRACT_WORKERS),
    validate_parameters=True,
)
def extract_and_train(
    dataset: str = "demo",
    source: str = "demo_data/videos",
    store: str = "stores/demo.zarr",
    features: list[FeatureName] = list(ALL_FEATURES),
    weights_dir: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    extract: ExtractOptions | None = None,
    training: TrainingOptions | None = None,
    runs_dir: str | None = None,
    min_train_videos: int = 2,
    plot_videos: int = 3,
) -> dict[str, Any]:
    params = ExtractAndTrainParams(
        dataset=dataset, source=source, store=store, features=features, weights_dir=weights_dir,
        device=device, allow_random_init=allow_random_init, extract=extract or ExtractOptions(),
        training=training or TrainingOptions(), runs_dir=runs_dir, min_train_videos=min_train_videos,
        plot_videos=plot_videos,
    )
    return run_pipeline(params, orchestrated=True)


def run_pipeline(params: ExtractAndTrainParams, orchestrated: bool) -> dict[str, Any]:
    """The pipeline body. ``orchestrated``: inside a flow run (tasks + artifacts) or plain calls.

    The plain mode exists for bench/bench_orchestration.py (same steps, no Prefect) and
    for debugging; it writes the same run record.
    """
    log = get_run_logger() if orchestrated else _PrintLogger()
    run_id = current_run_id() if orchestrated else str(uuid.uuid4())
    timings: dict[str, float] = {}
    call = _task_caller(orchestrated)
    params_dump = params.model_dump(mode="json")
    writer = RunRecordWriter(run_id, resolve_path(params.runs_dir) if params.runs_dir else None)
    dataset_name = str(params.dataset)  # (until the dataset is loaded: a run that fails on it still says which)
    key = lambda *parts: artifacts.artifact_key(FLOW_NAME, dataset_name, *parts)  # noqa: E731
    extract_cfg = training_cfg = plan = reports = check = train_result = predictions = evaluation = None
    failures: list[dict] = []
    try:
        # Inside the try: a bad dataset, store or setting also leaves a failed record saying why.
        dataset = steps.load_dataset(params.dataset)
        dataset_name = dataset.name
        extract_cfg = params.extract.build(params.features, params.weights_dir, params.device,
                                           params.allow_random_init, dataset.grid)
        training_cfg = params.training.build(params.device)
        needed, stored_only = steps.check_run_inputs(
            dataset, training_cfg, list(params.features), params.training.predict_subset, params.min_train_videos,
            (resolve_path(params.store) / "zarr.json").exists())
        if stored_only:
            log.warning(f"the model reads {stored_only}, which this run does not extract (features={params.features}):"
                        " only videos whose stored features include them are used")
        with _timed(timings, "discover+plan"):
            videos = call(tasks.discover_videos, steps.discover, params.source)
            # (after the source and the networks: a typo or missing weights leave no empty store)
            store = steps.open_dataset_store(params.store, dataset, extract_cfg)
            plan = call(tasks.plan_extraction, steps.plan_extraction, store, videos, list(params.features),
                        extract_cfg)
        log.info(f"{len(videos)} videos; plan: {plan.counts()}")
        if plan.unreadable:
            log.warning(f"{len(plan.unreadable)} complete stored video(s) whose source file cannot be read now; their "
                        "stored features are used: " + ", ".join(plan.unreadable[:20])
                        + (" ..." if len(plan.unreadable) > 20 else ""))
        with _timed(timings, "extract"):
            if orchestrated:
                reports, failures = run_extraction(
                    plan.todo, store, extract_cfg, gpu_limit_name(params.device), key("extraction-progress")
                )
            else:
                reports, failures = _extract_direct(plan.todo, store, extract_cfg)
        if failures:
            log.warning(f"{len(failures)} video(s) failed: " + ", ".join(f["video_id"] for f in failures))
        not_theirs = [f for f in failures if not f.get("video_fault")]
        if not_theirs:  # (a disk full, no memory, the server away: training on what is left would hide it)
            raise RuntimeError(
                f"{len(not_theirs)} video(s) failed for a reason that is not the file's (running again extracts them): "
                + "; ".join(f"{f['video_id']}: {f['error']}" for f in not_theirs[:5])
                + (" ..." if len(not_theirs) > 5 else ""))
        with _timed(timings, "check-store"):
            check = call(tasks.check_store, steps.check_store, store, dataset, needed, params.min_train_videos,
                         params.training.predict_subset, training_cfg.train.mode, [f["video_id"] for f in failures])
        with _timed(timings, "train"):
            train_result = call(tasks.train, steps.train_model, training_cfg, store, dataset, writer.path / "model",
                                check.train_videos)
        subset = steps.subset_name(dataset, params.training.predict_subset)
        with _timed(timings, "predict"):
            predictions = call(tasks.predict, steps.predict_detections, train_result.checkpoint, store, dataset,
                               subset, params.device,
                               check.train_videos if params.training.predict_subset == "train" else check.test_videos)
        with _timed(timings, "evaluate"):
            evaluation = call(tasks.evaluate, steps.evaluate, dataset, predictions, subset)
        left_out = steps.not_evaluated(dataset, predictions, subset)
        if left_out:
            log.warning(f"{len(left_out)} of the {len(dataset.videos(subset))} videos of subset {subset!r} are not "
                        "complete in the store, so not evaluated: " + ", ".join(left_out[:20])
                        + (" ..." if len(left_out) > 20 else ""))
        map_by_tiou, average_map = steps.map_summary(evaluation)
        table = evaluation.format_table()
        log.info("\n" + table)
        with _timed(timings, "plots"):
            shown = [v for v in dataset.videos(subset) if v in predictions.get("results", {})][: params.plot_videos]
            curves = report.attention_curves(train_result.checkpoint, store, dataset, subset, shown, params.device)
            pngs = report.build_plots(dataset, predictions, map_by_tiou, shown, params.plot_videos, curves)
        report.fill_record(
            writer, params=params_dump, extract_config=extract_cfg, training_config=training_cfg, plan=plan,
            reports=reports, failures=failures, check=check, train_result=train_result, predictions=predictions,
            evaluation=evaluation, evaluation_table=table, plot_pngs=pngs,
        )
        record_path = writer.final_path()  # where publish() will put it (shown in the summary)
        summary = artifacts.RunSummary(
            flow_run_id=run_id, dataset=dataset.name, store_path=str(resolve_path(params.store)),
            store_fingerprint=check.fingerprint, num_videos=check.num_videos,
            extracted=steps.computed_videos(reports), skipped=len(plan.complete), failures=failures,
            timings_s=dict(timings), average_map=average_map, map_by_tiou=map_by_tiou,
            random_init=bool(check.random_init_features), record_path=str(record_path),
            code_revision=code_revision(), evaluated_videos=len(predictions.get("results", {})),
            not_evaluated=left_out, evaluated_classes=f"{len(evaluation.per_class_AP)} of {dataset.num_classes}",
        )
        writer.write_bytes("summary.md", artifacts.summary_markdown(summary).encode())
        record = report.record_summary(FLOW_NAME, dataset.name, "completed", params_dump, check, map_by_tiou,
                                       average_map, failures, timings)
        record["random_init_features"] = check.random_init_features
        record["evaluation"] = {"subset": subset, "videos": len(predictions.get("results", {})),
                                "not_evaluated": left_out, "classes": len(evaluation.per_class_AP),
                                "dataset_classes": dataset.num_classes}
        published = writer.publish(record)
        summary.record_path = str(published)
        if orchestrated:
            with _timed(timings, "artifacts"):
                _publish_artifacts(key, dataset.name, summary, map_by_tiou, average_map, failures, pngs, published)
        log.info(f"run record: {published}")
        return {
            "run_id": run_id, "record": str(published), "average_map": average_map,
            "map_by_tiou": {f"{t:.2f}": m for t, m in map_by_tiou.items()}, "extracted": len(steps.computed_videos(reports)),
            "failures": failures, "store_fingerprint": check.fingerprint, "table": table,
        }
    except BaseException as exc:
        # A failed run still leaves a (failed) record: its config, plan and failures explain what happened. So
        # does a stopped one ("cancelled": a Prefect cancel or the worker's SIGTERM arrive as a BaseException,
        # Ctrl-C as KeyboardInterrupt); only a SIGKILL leaves none (its staging directory is dropped later).
        status = "failed" if isinstance(exc, Exception) else "cancelled"
        try:
            report.fill_record(
                writer, params=params_dump, extract_config=extract_cfg, training_config=training_cfg, plan=plan,
                reports=reports or [], failures=failures, check=check, train_result=train_result,
                predictions=predictions, evaluation=None, evaluation_table=None, plot_pngs={},
            )
            writer.publish(report.record_summary(FLOW_NAME, dataset_name, status, params_dump, check, None, None,
                                                 failures, timings, error=f"{type(exc).__name__}: {exc}"))
            if orchestrated and failures and status == "failed":
                artifacts.publish_failures(key("failures"), failures)
        except Exception as record_exc:  # noqa: BLE001 -- the run's own exception is the one to raise
            log.warning(f"could not write the {status} run's record: {type(record_exc).__name__}: {record_exc}")
        raise


def _publish_artifacts(key, dataset_name, summary, map_by_tiou, average_map, failures, pngs, record_path) -> None:
    artifacts.publish_map_table(key("map"), map_by_tiou, average_map, dataset_name)
    artifacts.publish_markdown(key("summary"), artifacts.summary_markdown(summary), "Run summary")
    images = "\n\n".join(
        f"### {name.removesuffix('.png')}\n\n{artifacts.image_markdown(name, png)}" for name, png in pngs.items()
    )
    artifacts.publish_markdown(key("plots"), f"# Plots\n\n{images}", "mAP vs tIoU and activation curves vs ground truth")
    artifacts.publish_failures(key("failures"), failures)
    artifacts.publish_record_link(key("run-record"), str(record_path))


def _task_caller(orchestrated: bool):
    """Call the Prefect task in a flow run, the plain step otherwise."""
    def call(task_fn, step_fn, *args):
        return task_fn(*args) if orchestrated else step_fn(*args)

    return call


def _extract_direct(todo, store, config) -> tuple[list[dict], list[dict]]:
    from extractors.errors import VideoError

    reports, failures = [], []
    for item in todo:
        try:
            reports.append(steps.extract_one(item, store, config))
        except VideoError as exc:
            failures.append({"video_id": item.video_id, "source": item.path, "error": f"{type(exc).__name__}: {exc}",
                             "video_fault": True})
    return reports, failures


class _PrintLogger:
    def info(self, msg: str) -> None:
        print(msg, flush=True)

    warning = info


if __name__ == "__main__":
    extract_and_train()
