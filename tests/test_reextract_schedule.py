"""`reextract`: its cron deployment in prefect.yaml, and per run only new or changed videos are extracted;
enough new videos start extract-and-train through its deployment."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from clipae import REPO_ROOT
from clipae.demo_data import DEMO_CLASSES, DemoSpec, generate_demo_dataset, plan_videos, render_video

from flow_fixtures import make_tiny_dataset

SPEC = DemoSpec(train_per_class=1, test_per_class=0, duration=3.0, min_action_s=1.0, max_action_s=1.5,
                max_instances=1, seed=11, classes=DEMO_CLASSES)
ONLY_VGGISH = ["vggish"]  # the cheapest feature keeps this test fast


def test_prefect_yaml_schedules_reextract_thumos_on_cron():
    from prefect.client.schemas.schedules import CronSchedule

    doc = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deps = {(d["entrypoint"].split(":")[1], d["name"]): d for d in doc["deployments"]}
    assert {("extract_and_train", "thumos"), ("extract_and_train", "activitynet12"), ("extract_and_train", "demo"),
            ("reextract", "thumos")} <= set(deps)
    rex = deps[("reextract", "thumos")]
    (sched,) = rex["schedules"]
    cron = CronSchedule(cron=sched["cron"], timezone=sched.get("timezone", "UTC"))  # validates the expression
    assert cron.cron == "0 2 * * *" and sched.get("active", True)
    with pytest.raises(ValueError):
        CronSchedule(cron="61 * * * *")
    assert rex["parameters"]["trigger_deployment"] == "extract-and-train/thumos"
    pulls = doc["pull"]
    assert "prefect.deployments.steps.set_working_directory" in pulls[0]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _flow_runs_of(deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as c:
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def test_each_run_extracts_only_new_or_changed_videos_and_triggers_training(harness, tmp_path):
    from flows.extract_and_train import extract_and_train
    from flows.reextract import reextract, state_path
    from storage import FeatureStore

    # Base dataset (for the grid and classes); its videos become the "source" that grows over time.
    cfg, _ = make_tiny_dataset(tmp_path)
    source = tmp_path / "incoming"
    generate_demo_dataset(tmp_path / "gen", SPEC)
    gen_videos = sorted((tmp_path / "gen" / "videos").glob("*.mp4"))
    source.mkdir()
    for v in gen_videos[:2]:
        shutil.copy(v, source / v.name)
    store = tmp_path / "store.zarr"
    dep_id = extract_and_train.to_deployment(name="thumos-test").apply()
    common = dict(source=str(source), store=str(store), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, extract={"overrides": {"crop_size": 32, "resize_short": 32}},
                  trigger_deployment="extract-and-train/thumos-test", trigger_min_new_videos=3)

    first = reextract(**common)
    assert first["extracted"] == sorted(v.stem for v in gen_videos[:2])
    assert first["triggered"] is None and first["pending_new_videos"] == first["extracted"]
    fp_before = FeatureStore.open(store).fingerprint()

    nothing = reextract(**common)  # a scheduled tick with no new files does nothing
    assert nothing["extracted"] == [] and FeatureStore.open(store).fingerprint() == fp_before

    shutil.copy(gen_videos[2], source / gen_videos[2].name)  # one video arrives
    second = reextract(**common)
    assert second["extracted"] == [gen_videos[2].stem], "only the added video is processed"
    assert second["triggered"] is not None and second["pending_new_videos"] == []
    runs = _flow_runs_of(dep_id)
    assert [str(r.id) for r in runs] == [second["triggered"]["flow_run_id"]]
    # the triggered training reads this run's store, not whatever its deployment's default names
    assert runs[0].parameters["store"] == str(store) and runs[0].parameters["source"] == str(source)

    # A changed source (same name, new content) is re-extracted; the others are left alone.
    changed = source / gen_videos[0].name
    other = plan_videos(SPEC)[1]
    render_video(SPEC, other, changed)
    third = reextract(**common)
    assert third["extracted"] == [gen_videos[0].stem]
    assert FeatureStore.open(store).fingerprint() != fp_before

    state = json.loads(state_path(store).read_text())
    assert [r["extracted"] for r in state["runs"]] == [first["extracted"], [], [gen_videos[2].stem],
                                                       [gen_videos[0].stem]]


def test_a_broken_video_is_not_retried_until_it_changes(harness, tmp_path):
    from flows.reextract import reextract

    cfg, _ = make_tiny_dataset(tmp_path)
    source = tmp_path / "incoming"
    source.mkdir()
    (source / "broken.mp4").write_bytes(b"garbage" * 50)
    common = dict(source=str(source), store=str(tmp_path / "s.zarr"), dataset=str(cfg), features=["vggish"],
                  allow_random_init=True)
    first = reextract(**common)
    assert [f["video_id"] for f in first["failures"]] == ["broken"] and first["failures"][0]["video_fault"]
    again = reextract(**common)
    assert again["failures"] == [] and again["known_bad"] == ["broken"], "same bytes: skipped, not failed again"
    (source / "broken.mp4").write_bytes(b"other garbage" * 50)
    assert [f["video_id"] for f in reextract(**common)["failures"]] == ["broken"]


def test_a_failure_that_is_not_the_videos_fails_the_run_and_is_retried(harness, tmp_path):
    """Missing weights (no --allow-random-init) failed every video, the run ended Completed, and the videos
    were remembered as broken: never extracted again until their bytes changed."""
    import pytest

    from extractors.weights import WeightsError
    from flows.reextract import reextract, state_path, store_lock

    cfg, _ = make_tiny_dataset(tmp_path)
    source = tmp_path / "incoming"
    generate_demo_dataset(tmp_path / "gen", SPEC)
    source.mkdir()
    video = sorted((tmp_path / "gen" / "videos").glob("*.mp4"))[0]
    shutil.copy(video, source / video.name)
    (tmp_path / "no_weights").mkdir()
    common = dict(source=str(source), store=str(tmp_path / "s.zarr"), dataset=str(cfg), features=["vggish"],
                  weights_dir=str(tmp_path / "no_weights"))
    with pytest.raises(WeightsError, match="vggish"):
        reextract(**common, allow_random_init=False)
    assert not (tmp_path / "s.zarr").exists()  # (the networks load before a new store is created)
    assert not state_path(tmp_path / "s.zarr").exists() or not json.loads(
        state_path(tmp_path / "s.zarr").read_text())["failed"]
    assert reextract(**common, allow_random_init=True)["extracted"] == [video.stem]

    # one run per store at a time: a second one finds the lock held and does nothing
    shutil.copy(video, source / "another.mp4")
    with store_lock(tmp_path / "s.zarr") as held:
        assert held
        busy = reextract(**common, allow_random_init=True)
    assert busy["extracted"] == [] and "lock" in busy["skipped"]
    assert reextract(**common, allow_random_init=True)["extracted"] == ["another"]


def test_a_wrong_source_creates_nothing_beside_the_store(harness, tmp_path):
    """The lock file (and the store's parent directories) were created before the source was looked at: a
    typo in the source left a new directory tree with a lock file in it."""
    from extractors.manifest import ManifestError
    from flows.reextract import reextract

    cfg, _ = make_tiny_dataset(tmp_path)
    store = tmp_path / "new" / "place" / "s.zarr"
    with pytest.raises(ManifestError, match="no such"):
        reextract(source=str(tmp_path / "incomming"), store=str(store), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True)
    assert not (tmp_path / "new").exists()


def test_a_stopped_run_still_counts_what_it_published_towards_training(harness, tmp_path, monkeypatch):
    """The state was saved only at the end: a run cancelled after publishing some videos forgot them, and
    the next run no longer saw them as new, so they never counted towards trigger_min_new_videos."""
    import flows.reextract as rx
    from flows.reextract import reextract, state_path

    cfg, _ = make_tiny_dataset(tmp_path)
    source = tmp_path / "incoming"
    generate_demo_dataset(tmp_path / "gen", SPEC)
    source.mkdir()
    for v in sorted((tmp_path / "gen" / "videos").glob("*.mp4"))[:3]:
        shutil.copy(v, source / v.name)
    real = rx.run_extraction

    def stopped_after_the_first(todo, *a):
        real(todo[:1], *a)
        raise KeyboardInterrupt  # (a cancel: Prefect's TerminationSignal is a BaseException too)

    monkeypatch.setattr(rx, "run_extraction", stopped_after_the_first)
    common = dict(source=str(source), store=str(tmp_path / "s.zarr"), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, extract={"overrides": {"crop_size": 32, "resize_short": 32}})
    with pytest.raises(KeyboardInterrupt):
        reextract(**common)
    first = sorted(p.stem for p in source.glob("*.mp4"))[0]
    assert json.loads(state_path(tmp_path / "s.zarr").read_text())["pending_new_videos"] == [first]
    monkeypatch.undo()
    again = reextract(**common)
    assert len(again["extracted"]) == 2 and again["pending_new_videos"] == sorted(p.stem for p in source.glob("*.mp4"))


def _one_video_source(tmp_path):
    generate_demo_dataset(tmp_path / "gen", SPEC)
    source = tmp_path / "incoming"
    source.mkdir()
    video = sorted((tmp_path / "gen" / "videos").glob("*.mp4"))[0]
    shutil.copy(video, source / video.name)
    return source, video.stem


def test_the_trigger_is_checked_before_any_extraction(harness, tmp_path):
    """A trigger naming no deployment, or parameters its run rejects, failed only after the whole extraction,
    losing the run's count of new videos; an unknown key even started a run that could not start."""
    from flows.extract_and_train import extract_and_train
    from flows.reextract import reextract

    cfg, _ = make_tiny_dataset(tmp_path)
    source, _ = _one_video_source(tmp_path)
    extract_and_train.to_deployment(name="trigger-check").apply()
    common = dict(source=str(source), store=str(tmp_path / "s.zarr"), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, trigger_min_new_videos=1)
    for name, params, message in (
        ("noslash", {}, "must be '<flow name>/<deployment name>'"),
        ("extract-and-train/nope", {}, "'extract-and-train/nope': no such deployment"),
        ("extract-and-train/trigger-check", {"min_train_videoz": 1}, r"has no parameter \['min_train_videoz'\]"),
        ("extract-and-train/trigger-check", {"plot_videos": "many"}, "would not start"),
    ):
        with pytest.raises(ValueError, match=message):
            reextract(**common, trigger_deployment=name, trigger_parameters=params)
    assert not (tmp_path / "s.zarr").exists()


def test_a_trigger_that_cannot_start_keeps_the_new_videos_counted(harness, tmp_path, monkeypatch):
    import prefect.deployments

    from flows.extract_and_train import extract_and_train
    from flows.reextract import reextract, state_path

    cfg, _ = make_tiny_dataset(tmp_path)
    source, vid = _one_video_source(tmp_path)
    extract_and_train.to_deployment(name="trigger-keep").apply()
    common = dict(source=str(source), store=str(tmp_path / "s.zarr"), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, extract={"overrides": {"crop_size": 32, "resize_short": 32}},
                  trigger_deployment="extract-and-train/trigger-keep", trigger_min_new_videos=1)

    def server_away(*a, **k):
        raise RuntimeError("server away")

    monkeypatch.setattr(prefect.deployments, "run_deployment", server_away)
    with pytest.raises(RuntimeError, match=r"could not start extract-and-train/trigger-keep .*server away.*stay counted"):
        reextract(**common)
    assert json.loads(state_path(tmp_path / "s.zarr").read_text())["pending_new_videos"] == [vid]
    monkeypatch.undo()
    again = reextract(**common)  # nothing new, but the pending video still counts
    assert again["extracted"] == [] and again["triggered"]["new_videos"] == 1 and again["pending_new_videos"] == []


def test_an_unusable_state_file_is_moved_aside_and_the_run_goes_on(harness, tmp_path):
    """A cut-off or hand-edited state file stopped every later run with a bare JSONDecodeError/KeyError that did
    not name it; a string in pending_new_videos would have counted each of its letters as a new video."""
    from flows.reextract import reextract, state_path

    cfg, _ = make_tiny_dataset(tmp_path)
    source, vid = _one_video_source(tmp_path)
    store = tmp_path / "s.zarr"
    common = dict(source=str(source), store=str(store), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, extract={"overrides": {"crop_size": 32, "resize_short": 32}})
    spath = state_path(store)
    spath.write_text('{"pending_new_videos": [')
    assert reextract(**common)["extracted"] == [vid]
    spath.write_text('{"pending_new_videos": "abc", "failed": {}}')
    assert reextract(**common)["pending_new_videos"] == []
    assert len(list(tmp_path.glob(spath.name + ".corrupt-*"))) == 2
    assert json.loads(spath.read_text())["pending_new_videos"] == []


def test_a_failed_file_is_retried_once_rewritten_and_a_dangling_link_fails_alone(harness, tmp_path):
    """A dangling link (or a manifest entry without its file) failed the plan, so nothing was extracted; a
    failed file rewritten in its middle only (same size, same first and last MiB) stayed "known bad"; a store
    reached through a symlink had a lock of its own."""
    import os

    from flows.reextract import reextract, store_lock

    cfg, _ = make_tiny_dataset(tmp_path)
    source, vid = _one_video_source(tmp_path)
    broken = source / "broken.mp4"
    broken.write_bytes(b"garbage" * 50)
    (source / "dangling.mp4").symlink_to(source / "gone.mp4")
    store = tmp_path / "s.zarr"
    common = dict(source=str(source), store=str(store), dataset=str(cfg), features=ONLY_VGGISH,
                  allow_random_init=True, extract={"overrides": {"crop_size": 32, "resize_short": 32}})
    first = reextract(**common)
    assert first["extracted"] == [vid]
    assert sorted(f["video_id"] for f in first["failures"]) == ["broken", "dangling"]
    assert all(f["video_fault"] for f in first["failures"])
    assert sorted(reextract(**common)["known_bad"]) == ["broken", "dangling"]
    st = broken.stat()
    os.utime(broken, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # (what a rewrite of its middle leaves)
    third = reextract(**common)
    assert [f["video_id"] for f in third["failures"]] == ["broken"] and third["known_bad"] == ["dangling"]

    (tmp_path / "alias.zarr").symlink_to(store)
    with store_lock(tmp_path / "alias.zarr") as held:
        assert held
        assert "lock" in reextract(**common)["skipped"]


def test_a_state_file_the_os_will_not_read_is_not_thrown_away_and_old_entries_still_match(tmp_path):
    from flows.reextract import _failed_before, file_stamp, load_state
    from flows.steps import PlannedVideo

    (tmp_path / "s.zarr.reextract.json").mkdir()  # (stands for a permission or I/O error)
    with pytest.raises(RuntimeError, match=r"cannot read the reextract state file .*s.zarr.reextract.json"):
        load_state(tmp_path / "s.zarr.reextract.json")
    assert (tmp_path / "s.zarr.reextract.json").is_dir() and not list(tmp_path.glob("*.corrupt-*"))
    item = PlannedVideo("v", "/v.mp4", "new", "fp1", 123)
    assert file_stamp(item) == "fp1 mtime_ns=123" and _failed_before("fp1 mtime_ns=123", item)
    assert not _failed_before("fp1 mtime_ns=99", item) and not _failed_before(None, item)
    assert _failed_before("fp1", item), "an entry from before the stamps matches on the fingerprint"
