"""extract-and-train under prefect_test_harness: real extraction (random weights, tiny videos),
training, evaluation, artifacts and run records; a failing video; resume after a crash."""
from __future__ import annotations

import json
import shutil
import threading
from types import SimpleNamespace

import pytest

from flows import artifacts
from flows.params import ExtractAndTrainParams, ExtractOptions, TrainingOptions, gpu_limit_name

from flow_fixtures import tiny_run_parameters


def test_parameters_are_typed_and_validated():
    p = ExtractAndTrainParams(dataset="demo", source="v", store="s", device="cuda:1")
    assert p.features == ["i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"]
    for bad in ({"device": "gpu"}, {"features": ["i3d_rgb", "i3d_rgb"]}, {"features": ["sift"]},
                {"features": []}, {"min_train_videos": 0}, {"unknown": 1}):
        with pytest.raises(ValueError):
            ExtractAndTrainParams(dataset="demo", source="v", store="s", **bad)
    assert gpu_limit_name("cuda:1") == "gpu-1" and gpu_limit_name("cuda") == "gpu-0"
    assert gpu_limit_name("cpu") == "cpu-extract"


def test_auto_device_takes_the_limit_of_the_device_it_resolves_to(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_limit_name("auto") == "gpu-0"  # extraction runs on CUDA: the GPU's slots, not cpu-extract
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_limit_name("auto") == "cpu-extract"


def test_deployments_take_weights_from_clipae_weights_dir(monkeypatch, tmp_path):
    import yaml

    from clipae import REPO_ROOT
    from extractors.weights import default_weights_dir, weights_path
    from flows.params import resolve_path

    doc = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert all("weights_dir" not in d["parameters"] for d in doc["deployments"]), "would override the env var"
    monkeypatch.delenv("CLIPAE_WEIGHTS_DIR", raising=False)
    assert default_weights_dir() == resolve_path("weights")  # what the removed `weights_dir: weights` meant
    monkeypatch.setenv("CLIPAE_WEIGHTS_DIR", str(tmp_path))
    cfg = ExtractOptions().build(["vggish"], None, "cpu", False)
    assert weights_path("vggish", cfg.weights_dir_path()).is_relative_to(tmp_path)


def test_flow_step_applies_torch_threads_once_per_config(monkeypatch, tmp_path):
    """extract.overrides.torch_threads is not ignored by the flows (they never call extract_many)."""
    import torch

    from flows import steps

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    want = torch.get_num_threads() + 1
    cfg = ExtractOptions(overrides={"torch_threads": want}).build(["vggish"], str(tmp_path), "cpu", True)
    try:
        first = steps.get_extractors(cfg)
        assert steps.get_extractors(cfg) is first
        assert calls == [want], "set once, when the config's networks are set up"
    finally:
        steps._EXTRACTORS.pop(repr(cfg)).close()


def test_a_missing_limit_is_not_retried():
    from prefect.states import Failed

    from flows.limits import MissingLimitError
    from flows.tasks import _transient

    assert not _transient(None, None, Failed(data=MissingLimitError("gpu-0 does not exist")))
    assert _transient(None, None, Failed(data=RuntimeError("CUDA out of memory")))


def test_extract_options_build_the_real_extract_config():
    from storage import SnippetGrid

    cfg = ExtractOptions(overrides={"crop_size": 64, "tvl1": {"nscales": 1}}).build(
        ["vggish", "i3d_rgb"], None, "cpu", True, SnippetGrid(fps=10.0, snippet_frames=8, stride=8))
    assert cfg.crop_size == 64 and cfg.tvl1.nscales == 1 and cfg.tvl1.warps == 5
    assert cfg.fps == 10.0 and cfg.snippet_frames == 8 and cfg.allow_random_weights
    assert cfg.features == ("i3d_rgb", "vggish")
    with pytest.raises(ValueError, match="unknown ExtractConfig field"):
        ExtractOptions(overrides={"crop": 64}).build(["vggish"], None, "cpu", True)
    with pytest.raises(ValueError):
        TrainingOptions(overrides={"nonsense": {"x": 1}}).build("cpu")


def test_artifact_builders():
    assert artifacts.artifact_key("extract-and-train", "THUMOS'14", "map") == "extract-and-train-thumos-14-map"
    rows = artifacts.map_table_rows({0.5: 0.25, 0.1: 0.5}, 0.375)
    assert rows == [{"tIoU": "0.10", "mAP (%)": "50.00"}, {"tIoU": "0.50", "mAP (%)": "25.00"},
                    {"tIoU": "avg", "mAP (%)": "37.50"}]
    md = artifacts.summary_markdown(artifacts.RunSummary(
        flow_run_id="r", dataset="demo", store_path="/s", store_fingerprint="fp", num_videos=3, extracted=["a"],
        skipped=2, failures=[{"video_id": "bad", "error": "VideoError: x|y"}], timings_s={"extract": 2.0},
        average_map=0.375, random_init=True, record_path="/runs/x"))
    assert "37.50 %" in md and "| bad | VideoError: x/y |" in md and "random initialisation" in md
    assert artifacts.image_markdown("t", b"\x89PNG").startswith("![t](data:image/png;base64,iVBOR")


@pytest.fixture(scope="module")
def harness():
    import prefect.main  # noqa: F401 -- Prefect replaces the root log handlers on this import: done here, not in a
    # test's call phase, where it removed pytest's capture handler (a test using caplog failed when run alone)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _artifacts_of(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in arts}


def test_flow_extracts_trains_evaluates_lists_failures_and_resumes(harness, tmp_path):
    from flows import steps
    from flows.extract_and_train import extract_and_train
    from storage import FeatureStore

    params = tiny_run_parameters(tmp_path)
    videos = sorted((tmp_path / "demo" / "videos").glob("*.mp4"))
    (tmp_path / "demo" / "videos" / "broken_clip.mp4").write_bytes(b"not a video at all" * 100)

    # A previous run "crashed" after finishing one video: it is in the store, complete.
    p = ExtractAndTrainParams(**params)
    dataset = steps.load_dataset(p.dataset)
    store = steps.open_dataset_store(p.store, dataset)
    cfg = p.extract.build(p.features, p.weights_dir, p.device, p.allow_random_init, dataset.grid)
    first = steps.PlannedVideo(videos[0].stem, str(videos[0]), "new", steps.source_fingerprint(videos[0]))
    steps.extract_one(first, store, cfg)

    out = extract_and_train(**params)
    assert out["extracted"] == len(videos) - 1, "the video finished before the crash is not extracted again"
    assert [f["video_id"] for f in out["failures"]] == ["broken_clip"]
    assert "VideoError" in out["failures"][0]["error"] or "Error" in out["failures"][0]["error"]
    extraction = json.loads((tmp_path / "runs" / _date_dir(tmp_path) / out["run_id"] / "extraction.json").read_text())
    assert sorted(r["video_id"] for r in extraction["reports"]) == [v.stem for v in videos[1:]]
    assert set(FeatureStore.open(p.store).list_videos()) == {v.stem for v in videos}
    assert 0.0 <= out["average_map"] <= 1.0 and len(out["map_by_tiou"]) == len(dataset.tiou_thresholds)

    record = json.loads((tmp_path / "runs" / _date_dir(tmp_path) / out["run_id"] / "record.json").read_text())
    assert record["status"] == "completed" and record["store_fingerprint"] == out["store_fingerprint"]
    assert {"config.json", "predictions.json", "metrics.json", "model/model.pt", "plots/map_vs_tiou.png"} <= set(
        record["files"])
    assert record["config"]["allow_random_init"] is True and record["random_init_features"]

    arts = _artifacts_of(out["run_id"])
    prefix = "extract-and-train-demo-"
    assert {prefix + k for k in ("map", "summary", "plots", "failures", "run-record", "extraction-progress")} <= set(arts)
    table = json.loads(arts[prefix + "map"].data)
    assert [r["tIoU"] for r in table][-1] == "avg" and len(table) == len(dataset.tiou_thresholds) + 1
    assert float(arts[prefix + "extraction-progress"].data) == pytest.approx(100.0)
    assert "broken_clip" in arts[prefix + "failures"].data
    assert "data:image/png;base64," in arts[prefix + "plots"].data
    assert out["store_fingerprint"] in arts[prefix + "summary"].data

    # Re-running finds everything extracted: nothing is computed again, the failure is reported again.
    again = extract_and_train(**params)
    assert again["extracted"] == 0 and [f["video_id"] for f in again["failures"]] == ["broken_clip"]
    assert again["store_fingerprint"] == out["store_fingerprint"]


def test_flow_creates_a_missing_gpu_limit_and_never_changes_an_existing_one(harness, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.limits import ensure_gpu_limit

    monkeypatch.setenv("CLIPAE_VIDEOS_PER_GPU", "3")
    assert "gpu-7" in ensure_gpu_limit("gpu-7")
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("gpu-7").limit == 3
        client.update_global_concurrency_limit("gpu-7", GlobalConcurrencyLimitUpdate(limit=5))  # an operator's choice
        assert ensure_gpu_limit("gpu-7") is None
        assert client.read_global_concurrency_limit_by_name("gpu-7").limit == 5
    assert ensure_gpu_limit("cpu-extract") is None  # CPU: a missing limit only means "no cap"


def test_extraction_without_its_gpu_limit_fails_with_how_to_fix_it(harness):
    from flows import tasks
    from flows.limits import MissingLimitError

    with pytest.raises(MissingLimitError, match=r"'gpu-42' does not exist: create it with deploy/setup.sh"):
        tasks.extract_video.fn(None, None, None, "gpu-42")


def _date_dir(tmp_path) -> str:
    return next(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))


def test_a_task_waiting_for_a_slot_says_so_and_gets_it_when_freed(harness, monkeypatch, caplog):
    """A run whose extractions only waited (on a slot a killed run still held) looked hung: nothing in its log."""
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    from flows import tasks

    with get_client(sync_client=True) as c:
        c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-77", limit=1))
    monkeypatch.setattr(tasks, "SLOT_WAIT_NOTICE_SECONDS", 0.5)
    got = []

    def waiter():
        with tasks._slot("gpu-77", "vid_a"):
            got.append(time.monotonic())

    with caplog.at_level("WARNING"):
        with concurrency("gpu-77", occupy=1, strict=True):
            t = threading.Thread(target=waiter)
            t.start()
            time.sleep(2.0)
            assert not got, "the slot was taken: the waiter must wait"
            released = time.monotonic()
        t.join(60)
    assert got and got[0] >= released
    assert "vid_a: waiting for a slot of concurrency limit 'gpu-77'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        with tasks._slot("gpu-77", "vid_b"):  # free: no notice
            pass
    assert "waiting" not in caplog.text


def test_the_flow_thread_sees_a_stop_signal_delivered_to_another_thread():
    """Live check: the worker's SIGTERM reached an extraction thread; Python runs handlers in the main thread,
    which sat in as_completed's untimed wait until the running extraction finished (27 s of the 30 s grace)."""
    import concurrent.futures
    import signal
    import time

    from flows.extraction_stage import finished

    class Stop(BaseException):
        pass

    class Fut:  # (finished() needs add_done_callback only)
        def __init__(self):
            self.inner = concurrent.futures.Future()

        def add_done_callback(self, fn):
            self.inner.add_done_callback(lambda _: fn(self))

    quick, slow = Fut(), Fut()
    quick.inner.set_result(1)

    def raise_stop(signum, frame):
        raise Stop

    def signal_another_thread():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # (delivered to THIS thread, not the main)
        time.sleep(5)
        slow.inner.set_result(2)  # (what the old wait needed before the handler could run)

    previous = signal.signal(signal.SIGUSR1, raise_stop)
    t0 = time.monotonic()
    try:
        threading.Thread(target=signal_another_thread, daemon=True).start()
        got = []
        with pytest.raises(Stop):
            for fut in finished([quick, slow]):
                got.append(fut)
        assert got == [quick] and time.monotonic() - t0 < 2.5
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stopped_run_stops_waiting_for_a_slot_and_gives_a_late_one_back(harness):
    """A task blocked in the slot acquisition ignored the stop: the flow process waited for it until the worker
    SIGKILLed it (live check: 38 s after the cancel, past the 30 s grace)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    from extractors.errors import ExtractionCancelled
    from flows import tasks

    with get_client(sync_client=True) as c:
        c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-78", limit=1))
    cancel = threading.Event()
    outcome = []

    def waiter():
        try:
            with tasks._slot("gpu-78", "vid_a", cancel):
                outcome.append("extracted")
        except ExtractionCancelled:
            outcome.append(("cancelled", time.monotonic()))

    with concurrency("gpu-78", occupy=1, strict=True):  # another run holds the only slot
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(1.0)
        stopped = time.monotonic()
        cancel.set()
        t.join(10)
        assert outcome and outcome[0][0] == "cancelled" and outcome[0][1] - stopped < 2, outcome
    deadline = time.monotonic() + 30  # the abandoned request may still be granted: it gives the slot back
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as c:
            if c.read_global_concurrency_limit_by_name("gpu-78").active_slots == 0:
                break
        time.sleep(0.5)
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name("gpu-78").active_slots == 0
    with tasks._slot("gpu-78", "vid_b", threading.Event()):  # and the next one gets it
        pass


def test_a_task_started_after_the_stop_sends_no_slot_request(monkeypatch):
    """Live check: each queued task the pool started after a stop still sent one slot request (a free slot was
    then taken and given back, and the process waited for the requests at exit)."""
    from extractors.errors import ExtractionCancelled
    from flows import tasks

    requests = []
    monkeypatch.setattr(tasks, "concurrency", lambda *a, **k: requests.append(a) or pytest.fail("requested"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ExtractionCancelled):
        with tasks._slot("gpu-80", "vid_a", cancel):
            pass
    assert requests == []


_STOPPED_WAITER = """
import threading, time
from extractors.errors import ExtractionCancelled
from flows import tasks
cancel = threading.Event()
threading.Timer(1.0, cancel.set).start()
try:
    with tasks._slot("gpu-79", "vid_a", cancel):
        print("extracted", flush=True)
except ExtractionCancelled:
    print("cancelled", time.monotonic(), flush=True)
"""


def test_a_stopped_run_that_only_waited_for_a_slot_exits_at_once(harness):
    """Live check: a run stopped while its tasks waited for another run's slot was SIGKILLed at the end of the
    30 s grace. Its process could not exit: Prefect's acquisition service finishes every queued request first,
    and an untimed request (Prefect's own retry loop) lasts until a slot is free."""
    import os
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as c:
        c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-79", limit=1))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    with concurrency("gpu-79", occupy=1, strict=True):  # another run holds the only slot throughout
        child = subprocess.Popen([sys.executable, "-c", _STOPPED_WAITER], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the stopped process did not exit while the slot was taken: {out} {err[-2000:]}")
        exited = time.monotonic()
    assert child.returncode == 0, err[-2000:]
    words = out.split()
    assert words[0] == "cancelled", out
    assert exited - float(words[1]) < 10, "the process lingered after the stop"


def test_zombie_automation_is_idempotent_and_follows_the_heartbeat_period(harness, monkeypatch):
    from datetime import timedelta

    from prefect.automations import Automation

    from deploy.zombie_automation import NAME, ensure_zombie_automation

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    assert ensure_zombie_automation().startswith("created")
    assert ensure_zombie_automation().endswith("exists")
    assert Automation.read(name=NAME).trigger.within == timedelta(seconds=120)
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")  # (a window under 4 periods would crash live runs)
    assert "replaced" in ensure_zombie_automation()
    assert Automation.read(name=NAME).trigger.within == timedelta(seconds=240)


def test_failed_run_still_publishes_a_failed_record(harness, tmp_path):
    from flows.extract_and_train import extract_and_train

    params = tiny_run_parameters(tmp_path)
    shutil.rmtree(params["source"])
    (tmp_path / "empty").mkdir()
    params.update(source=str(tmp_path / "empty"))
    with pytest.raises(Exception):
        extract_and_train(**params)
    records = list((tmp_path / "runs").glob("*/*/record.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "failed" and rec["error"]

    # a run failing on its parameters (unknown dataset) or a missing source leaves a record too, and no store
    for change, error in (({"dataset": "nope"}, "nope"), ({"source": str(tmp_path / "missing")}, "no such")):
        store = tmp_path / f"never_{len(records)}.zarr"
        with pytest.raises(Exception):
            extract_and_train(**{**params, "store": str(store), **change})
        records = sorted((tmp_path / "runs").glob("*/*/record.json"), key=lambda p: p.stat().st_mtime)
        rec = json.loads(records[-1].read_text())
        assert rec["status"] == "failed" and error in rec["error"], rec["error"]
        assert not store.exists()
    assert len(records) == 3


def test_a_stopped_run_publishes_a_cancelled_record(tmp_path, monkeypatch):
    """A cancel or SIGTERM arrives as a BaseException: the record was written for Exceptions only, so a stopped
    run left nothing in `clipae runs list` and its staging directory (checkpoints: tens of MB) behind."""
    from flows import steps
    from flows.extract_and_train import run_pipeline

    params = ExtractAndTrainParams(**tiny_run_parameters(tmp_path))

    def stopped(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "plan_extraction", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(params, orchestrated=False)
    (record,) = (tmp_path / "runs").glob("*/*/record.json")
    rec = json.loads(record.read_text())
    assert rec["status"] == "cancelled" and rec["error"].startswith("KeyboardInterrupt")
    assert not any((tmp_path / "runs" / ".staging").iterdir())


def test_check_store_refuses_features_made_in_different_ways(tmp_path):
    """Training on a store whose videos hold, say, random-init and pretrained I3D would mix them unknowingly."""
    from types import SimpleNamespace

    from flows.steps import check_store
    from tests.store_helpers import feats, prov, small_store

    store = small_store(tmp_path / "s.zarr", ("t1", "t2", "x1"))
    ds = SimpleNamespace(name="d", train_subset="train", test_subset="test", num_classes=2,
                         videos=lambda subset: ["t1", "t2"] if subset == "train" else ["x1"])
    check = check_store(store, ds, ["i3d_rgb", "vggish"], min_train_videos=2)
    assert check.train_videos == ["t1", "t2"] and check.random_init_features == ["i3d_rgb", "vggish"]
    other = prov()
    other.preprocess_hash = "p1"  # e.g. another crop size
    store.write_video("x1", {"i3d_rgb": feats(10)["i3d_rgb"]}, None, {"i3d_rgb": other})
    with pytest.raises(RuntimeError, match=r"(?s)made in different ways.*i3d_rgb: made 2 different ways.*2 videos \(t1, t2\)"):
        check_store(store, ds, ["i3d_rgb", "vggish"], min_train_videos=2)
    assert check_store(store, ds, ["vggish"], min_train_videos=2).train_videos == ["t1", "t2"]  # only what is trained on counts


def test_cli_train_and_predict_refuse_features_made_in_different_ways(tmp_path):
    """`clipae train` read a store whose videos' I3D was made two ways (README: "training refuses such a
    store"); only the Prefect flow checked. The check now lives with the loader, for both paths."""
    from types import SimpleNamespace

    from models.data import load_videos
    from tests.store_helpers import feats, prov, small_store

    store = small_store(tmp_path / "s.zarr", ("t1", "t2"))
    ds = SimpleNamespace(name="d", classes=["a"], videos=lambda subset: ["t1", "t2"],
                         annotations=lambda v: SimpleNamespace(duration=6.4, segments=[]))
    assert [v.video_id for v in load_videos(store, ds, "train", ["i3d_rgb"])] == ["t1", "t2"]
    other = prov()
    other.preprocess_hash = "p1"
    store.write_video("t2", {"i3d_rgb": feats(10)["i3d_rgb"]}, None, {"i3d_rgb": other})
    with pytest.raises(ValueError, match=r"(?s)made in different ways.*i3d_rgb: made 2 different ways"):
        load_videos(store, ds, "train", ["i3d_rgb"])
    assert len(load_videos(store, ds, "train", ["vggish"])) == 2


def test_damaged_videos_are_planned_for_extraction_and_only_the_runs_videos_are_checked(tmp_path):
    """One video's corrupt metadata stopped plan-extraction (and so every scheduled re-extraction) and, anywhere
    in the store, check-store. Now planning redoes it from its source ("damaged"), and check-store looks only at
    the dataset's videos, listing every damaged one at once."""
    from types import SimpleNamespace

    from flows.steps import check_store, plan_extraction
    from tests.store_helpers import small_store

    store = small_store(tmp_path / "s.zarr", ("t1", "t2", "x1", "orphan"))
    src = tmp_path / "v.mp4"
    src.write_bytes(b"source bytes")
    (store.path / "videos" / "orphan" / "zarr.json").write_text("{broken")
    plan = plan_extraction(store, [("orphan", str(src)), ("t1", str(src))], ["i3d_rgb"])
    assert [(p.video_id, p.reason) for p in plan.todo if p.video_id == "orphan"] == [("orphan", "damaged")]
    ds = SimpleNamespace(name="d", train_subset="train", test_subset="test", num_classes=2,
                         videos=lambda subset: ["t1", "t2"] if subset == "train" else ["x1"])
    assert check_store(store, ds, ["i3d_rgb"], min_train_videos=2).train_videos == ["t1", "t2"]
    for vid in ("t2", "x1"):
        (store.path / "videos" / vid / "zarr.json").write_text("[]")
    with pytest.raises(RuntimeError, match=r"(?s)2 videos of 'd' are damaged.*t2: .*zarr\.json.*x1: "):
        check_store(store, ds, ["i3d_rgb"], min_train_videos=2)


def test_a_stopped_run_cancels_its_extractions(harness, monkeypatch):
    """A Prefect cancel (or the worker's SIGTERM) reaches the flow's thread; the extraction threads, which the
    task runner waits for, went on extracting their videos to the end (and tasks still waiting for a slot
    started theirs), so a run stopped only when the worker SIGKILLed it. Now the stop sets the extraction's
    cancel event, which each task checks after its slot and passes to the extractor (checked every window)."""
    from extractors.errors import ExtractionCancelled
    from flows import extraction_stage, steps, tasks

    called = []
    monkeypatch.setattr(steps, "extract_one", lambda *a: called.append(a) or {"video_id": "v"})
    item = steps.PlannedVideo(video_id="v", path="/v.mp4", reason="new", source_fingerprint="f")
    ev = threading.Event()
    assert tasks.extract_video.fn(item, None, None, "cpu-extract", ev) == {"video_id": "v"}
    assert called[-1][-1] is ev  # (handed to the extractor)
    ev.set()
    state = tasks.extract_video.fn(item, None, None, "cpu-extract", ev)
    assert state.is_cancelled() and "nothing of this video was published" in state.message  # (not Crashed)
    assert len(called) == 1  # a slot granted after the stop starts nothing

    def cancelled_mid_video(*a):
        raise ExtractionCancelled()

    monkeypatch.setattr(steps, "extract_one", cancelled_mid_video)
    assert tasks.extract_video.fn(item, None, None, "cpu-extract", threading.Event()).is_cancelled()

    seen = {}

    def fake_map(todo, **kw):
        seen.update(kw)
        return []

    def stopped(futures):
        raise KeyboardInterrupt  # (Prefect's TerminationSignal is a BaseException too)

    monkeypatch.setattr(tasks.extract_video, "map", fake_map)
    monkeypatch.setattr(extraction_stage, "finished", stopped)
    monkeypatch.setattr(extraction_stage, "ensure_gpu_limit", lambda name: None)
    monkeypatch.setattr(steps, "get_extractors", lambda cfg: None)
    monkeypatch.setattr(extraction_stage, "ProgressReporter", lambda *a: SimpleNamespace(advance=lambda: None))
    with pytest.raises(KeyboardInterrupt):
        extraction_stage.run_extraction([item], None, None, "cpu-extract", "progress")
    assert seen["cancel"].value.is_set()


def test_the_first_store_refusal_stops_the_videos_not_yet_done():
    """A full or read-only store failed each video only at its write, after minutes of decoding and compute,
    one after the other (and each was retried twice): the first refusal now stops the rest."""
    import threading
    from types import SimpleNamespace

    from prefect.states import Cancelled, Completed, Failed

    from extractors.errors import ResourceError, VideoError
    from flows.extraction_stage import _collect
    from flows.steps import PlannedVideo
    from flows.tasks import _transient

    class Future:
        def __init__(self, i, state, report=None):
            self.task_run_id, self.state, self._report = i, state, report

        def add_done_callback(self, fn):
            fn(self)

        def wait(self):
            pass

        def result(self):
            return self._report

    full = ResourceError("/v/b.mp4", "store", "OSError: [Errno 28] No space left on device")
    states = [Completed(), Failed(data=VideoError("/v/a2.mp4", "probe", "not a video")), Failed(data=full),
              Cancelled(), Cancelled()]
    todo = [PlannedVideo(v, f"/v/{v}.mp4", "new", "fp") for v in ("a", "a2", "b", "c", "d")]
    futures = [Future(i, s, {"video_id": "a"} if i == 0 else None) for i, s in enumerate(states)]
    cancel = threading.Event()
    reports, failures = _collect(futures, todo, SimpleNamespace(advance=lambda: None), cancel)
    assert cancel.is_set() and [r["video_id"] for r in reports] == ["a"]
    by_id = {f["video_id"]: f for f in failures}
    assert by_id["a2"]["video_fault"] and not by_id["b"]["video_fault"]
    for vid in ("c", "d"):
        assert not by_id[vid]["video_fault"]
        assert by_id[vid]["error"] == ("not extracted: the run stopped extracting when writing b to the store failed "
                                       "(OSError: [Errno 28] No space left on device)")
    assert not _transient(None, None, Failed(data=full)), "a full disk is not retried 10 s later"
    assert _transient(None, None, Failed(data=ResourceError("/v/b.mp4", "i3d_rgb", "OutOfMemoryError: CUDA")))
