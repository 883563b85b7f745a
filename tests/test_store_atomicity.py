"""Atomic publication under SIGKILL, and concurrent writers in several processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from storage import FeatureStore
from tests.store_helpers import SMALL_DIMS

REPO = Path(__file__).resolve().parents[1]


def _writer(path: Path, prefix: str, n_videos: int, rounds: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store_writer", str(path), prefix, str(n_videos), str(rounds)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def assert_consistent(store: FeatureStore, vid: str) -> int:
    """Every feature of the video comes from the same write, and its data matches its metadata."""
    meta, data = store.load_with_meta(vid)
    assert set(meta["features"]) == set(store.feature_dims), f"{vid}: partial feature set {set(meta['features'])}"
    ks = set()
    for name, fmeta in meta["features"].items():
        k = fmeta["provenance"]["params"]["k"]
        arr = data[name]
        assert arr.shape == (meta["num_snippets"], store.feature_dims[name])
        assert np.all(arr == k), f"{vid}/{name}: data from another write than its metadata (k={k})"
        ks.add(k)
    assert len(ks) == 1, f"{vid}: features from different writes {ks}"
    assert np.all(data["audio_mask"] == (ks.pop() % 2 == 0))
    return meta["num_snippets"]


def test_sigkill_never_exposes_partial_video(tmp_path):
    path = tmp_path / "s.zarr"
    store = FeatureStore.create(path, features=SMALL_DIMS)
    rng = random.Random(0)
    kills = 0
    for attempt in range(12):
        proc = _writer(path, "vid", 3, -1)
        # kill at a random moment, after the interpreter is up and writing
        proc.stdout.readline() if attempt % 2 else None
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for vid in store.list_videos():
            assert_consistent(store, vid)
    assert kills == 12
    # rerunning completes what is missing and cleans the killed writers' scratch space
    done = _writer(path, "vid", 3, 2)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert store.list_videos() == ["vid0", "vid1", "vid2"]
    for vid in store.list_videos():
        assert_consistent(store, vid)
    leftovers = [p for d in ("tmp", "trash") for p in (path / "_staging" / d).iterdir()]
    assert leftovers == [], leftovers


def test_reader_during_rewrites_sees_only_whole_versions(tmp_path):
    path = tmp_path / "s.zarr"
    store = FeatureStore.create(path, features=SMALL_DIMS)
    writer = _writer(path, "vid", 1, 60)
    checks = 0
    errors: list[BaseException] = []

    def read_loop():
        nonlocal checks
        while writer.poll() is None:
            try:
                if store.has_video("vid0"):
                    assert_consistent(store, "vid0")
                    checks += 1
            except AssertionError as e:  # pragma: no cover - a failure is the point of the test
                errors.append(e)
                return
            except Exception:  # the video can vanish between has_video and load on the fallback path only
                pass

    t = threading.Thread(target=read_loop)
    t.start()
    _, err = writer.communicate(timeout=240)
    t.join()
    assert writer.returncode == 0, err
    assert not errors, errors[0]
    assert checks > 0


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    store = FeatureStore.create(path, features=SMALL_DIMS)
    procs = [_writer(path, f"p{j}_", 6, 2) for j in range(4)]
    shared = [_writer(path, "shared", 1, 4) for _ in range(2)]  # two processes rewrite the same video
    for p in procs + shared:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    ids = store.list_videos()
    assert ids == sorted([f"p{j}_{i}" for j in range(4) for i in range(6)] + ["shared0"])
    for vid in ids:
        assert_consistent(store, vid)


@pytest.mark.parametrize("with_exchange", [True, False])
def test_recovery_restores_a_video_moved_aside(tmp_path, with_exchange, monkeypatch):
    """Without RENAME_EXCHANGE the old version is moved aside first; a crash right there must not lose it."""
    from tests.store_writer import write_round

    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    write_round(store, "v", 1, 40)
    if not with_exchange:
        store._exchange_ok = False
    # simulate the crash window: the old version sits in trash/, the video is absent
    os.rename(store.path / "videos" / "v", store.path / "_staging" / "trash" / "v.999.deadbeef")
    assert not store.has_video("v")
    write_round(store, "v", 2, 40)  # the next writer of v recovers, then publishes its own version
    assert assert_consistent(store, "v") == 40
    assert store.video_meta("v")["features"]["i3d_rgb"]["provenance"]["params"]["k"] == 2


def test_exchange_probe_is_safe_when_processes_probe_at_once(tmp_path):
    """Every writer process probes RENAME_EXCHANGE support in the shared staging dir on first replace."""
    from concurrent.futures import ProcessPoolExecutor

    from storage.atomic import exchange_supported

    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(exchange_supported, [tmp_path] * 32))
    assert len(set(results)) == 1
    assert list(tmp_path.iterdir()) == []


def test_store_wide_recovery_after_killed_writers(tmp_path):
    """What killed writers leave is cleaned up for every video at once (clipae extract / store verify call
    it), not only when the same video is written again: a video caught between its two renames comes back,
    half-built copies go, and a video id with dots is parsed right."""
    from tests.store_writer import write_round

    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    for vid in ("v", "clip.v2"):
        write_round(store, vid, 1, 40)
    staging = store.path / "_staging"
    os.rename(store.path / "videos" / "clip.v2", staging / "trash" / "clip.v2.999.deadbeef")  # died between renames
    (staging / "tmp" / "v.998.cafe").mkdir()  # died while building a new version of v
    (staging / "tmp" / "v.998.cafe" / "junk").write_bytes(b"x" * 1000)
    assert store.list_videos() == ["v"]
    assert store.recover() == ["clip.v2", "v"]
    assert store.list_videos() == ["clip.v2", "v"] and assert_consistent(store, "clip.v2") == 40
    assert not any((staging / "tmp").iterdir()) and not any((staging / "trash").iterdir())
    assert store.recover() == []


def _replace_while_reading(store: FeatureStore, read_once, readers: int) -> int:
    """Replace video "v" 150 times through a writer without rename-exchange (the two-renames fallback of
    NFS/CIFS) while ``readers`` threads call ``read_once(reader_store)`` in a loop; returns the reads done."""
    from tests.store_helpers import feats, info, provs

    writer = FeatureStore.open(store.path)
    writer._exchange_ok = False
    done = threading.Event()
    reads = [0]

    def loop():
        reader = FeatureStore.open(store.path)
        while not done.is_set():
            read_once(reader)
            reads[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(readers)]
    for t in threads:
        t.start()
    try:
        for i in range(150):
            g = feats(8, seed=i)
            writer.write_video("v", g, info("v"), provs(g))
    finally:
        done.set()
        for t in threads:
            t.join()
    return reads[0]


def test_a_video_being_replaced_is_never_called_damaged_without_rename_exchange(tmp_path):
    """Without rename-exchange a replacement renames the old directory away, then the new one in: a reader in
    that gap found no zarr.json, then the directory, and called a healthy video damaged ("delete it"; and
    extraction rewrites damaged videos). Such a reader now reads again before deciding."""
    from storage import StoreDamageError
    from tests.store_helpers import feats, info, provs

    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    f = feats(8)
    store.write_video("v", f, info("v"), provs(f))
    damage: list[str] = []

    def read_once(reader):
        for op in (lambda: reader.load("v"), lambda: reader.verify_report("v"), reader.summary):
            try:
                out = op()
            except StoreDamageError as e:
                damage.append(str(e))
            except Exception:  # noqa: BLE001 -- only damage counts here (absence: the next test)
                continue
            if isinstance(out, dict) and out.get("damaged_videos"):
                damage.append(str(out["damaged_videos"]))
            elif isinstance(out, dict) and out and all(isinstance(v, str) for v in out.values()):
                damage.append(str(out))  # (verify_report: item -> problem)

    assert _replace_while_reading(store, read_once, readers=3) > 0 and not damage, damage[:3]


def test_a_video_being_replaced_never_reads_as_absent_without_rename_exchange(tmp_path):
    """Found by a concurrency review (NFS/CIFS have no rename-exchange): in the gap between the two renames a
    reader got "video 'v': not in store" (training and `clipae store info` failed) and listings left the video
    out (a summary counted 11 of 12). While the video's old version sits in _staging/trash, readers wait."""
    from tests.store_helpers import feats, info, provs

    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    f = feats(8)
    for vid in ("u", "v"):
        store.write_video(vid, f, info(vid), provs(f))
    problems: list[str] = []

    def read_once(reader):
        try:
            reader.load("v")
            if reader.list_videos() != ["u", "v"]:
                problems.append(f"listing {reader.list_videos()}")
            reader.fingerprint()
        except Exception as e:  # noqa: BLE001 -- any failure of a healthy video is the defect
            problems.append(f"{type(e).__name__}: {e}")

    assert _replace_while_reading(store, read_once, readers=2) > 0 and not problems, (len(problems), problems[:3])


def test_a_deletion_killed_halfway_never_comes_back_partial(tmp_path, monkeypatch):
    """delete_video moved the video to trash and removed it file by file; killed in between, recovery found
    the trash copy's zarr.json and restored a video whose arrays were partly gone."""
    import storage.store as store_mod
    from tests.store_helpers import feats, info, provs

    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    f = feats(8)
    store.write_video("v", f, info("v"), provs(f))
    name, real_rmtree = sorted(f)[0], store_mod.shutil.rmtree

    def killed_halfway(path, *a, **kw):  # removes one array, then the process "dies"
        real_rmtree(Path(path) / name)
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        store.delete_video("v")
    monkeypatch.undo()
    assert store.recover() == ["v"]
    assert store.list_videos() == [] and not store.has_video("v")


def test_recovery_drops_a_killed_creators_scratch_copy(tmp_path):
    """A creator killed before its root zarr.json left <store>/.create-<uuid>/, which plain zarr lists as a
    group of the root, forever. Recovery drops such copies once they are a minute old (a live one is not)."""
    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    stale, live = store.path / ".create-0123", store.path / ".create-4567"
    for d in (stale, live):
        (d / "videos").mkdir(parents=True)
        (d / "zarr.json").write_text("{}")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    store.recover()
    assert not stale.exists() and live.exists()


def test_a_killed_writers_old_trash_entry_costs_readers_no_wait(tmp_path, monkeypatch):
    """Readers wait while a video's old version sits in trash (a replacement between its renames); a leftover
    of a killed writer (older than TRASH_RECENT_S, by its own ctime) must not make every listing and read wait
    until recovery runs, even while other videos are being replaced (which touches the trash directory)."""
    import shutil

    import storage.store as store_mod
    from tests.store_helpers import feats, info, provs

    monkeypatch.setattr(store_mod, "TRASH_RECENT_S", 0.5)
    store = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    f = feats(8)
    store.write_video("v", f, info("v"), provs(f))
    shutil.copytree(store.path / "videos" / "v", store.path / "_staging" / "trash" / "gone.123.abc")
    time.sleep(0.6)
    (store.path / "_staging" / "trash" / "other.1.x").mkdir()  # (a fresh entry of a video that is present)
    store.write_video("other", f, info("other"), provs(f))
    t = time.perf_counter()
    for _ in range(10):
        assert store.list_videos() == ["other", "v"] and not store.has_video("gone")
        with pytest.raises(Exception, match="not in store"):
            store.load("gone")
    assert time.perf_counter() - t < 1.0  # (waiting would take 10 x 2 x 0.26 s)
