"""Feature store: round trip, merging, provenance, fingerprints, and every class of bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from storage import FeatureStore, SnippetGrid, StoreError
from storage.codecs import CodecSpec
from tests.store_helpers import SMALL_DIMS, feats, info, prov, provs


@pytest.fixture()
def store(tmp_path):
    return FeatureStore.create(tmp_path / "s.zarr", grid=SnippetGrid(25.0, 16, 16), name="t", features=SMALL_DIMS)


def test_round_trip_all_features(store):
    f = feats(37)
    store.write_video("video_a", f, info("video_a"), provs(f))
    assert store.list_videos() == ["video_a"]
    got = store.load("video_a")
    assert set(got) == set(f)
    for k in f:
        np.testing.assert_array_equal(got[k], f[k])
    assert got["i3d_rgb"].dtype == np.float32 and got["audio_mask"].dtype == bool
    assert store.num_snippets("video_a") == 37
    assert store.video_info("video_a") == info("video_a")
    assert store.provenance("video_a")["i3d_rgb"].same_config(prov())


@pytest.mark.parametrize("codec", ["none", "blosc-lz4", "blosc-zstd", "zstd"])
def test_codecs_and_multi_chunk_round_trip(tmp_path, codec):
    s = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS, codec=CodecSpec(codec), chunk_snippets=10)
    f = feats(95)  # 10 chunks, the last one partial
    s.write_video("v", f, info(), provs(f))
    got = s.load("v")
    for k in f:
        np.testing.assert_array_equal(got[k], f[k])


def test_fast_reader_equals_zarr_python(store):
    import zarr

    f = feats(50)
    store.write_video("v", f, info(), provs(f))
    g = zarr.open_group(str(store.path), mode="r")
    for k in f:
        np.testing.assert_array_equal(store.load("v", [k])[k], g[f"videos/v/{k}"][...])


def test_merge_keeps_existing_features_and_replaces_named(store):
    f = feats(20, {"i3d_rgb": 16, "i3d_flow": 16})
    store.write_video("v", f, info(), provs(f))
    g = {"clip_vitb16": np.ones((20, 8), np.float32)}
    store.write_video("v", g, None, provs(g))
    assert store.features_of("v") == {"i3d_rgb", "i3d_flow", "clip_vitb16"}
    np.testing.assert_array_equal(store.load("v", ["i3d_rgb"])["i3d_rgb"], f["i3d_rgb"])
    new_rgb = {"i3d_rgb": np.zeros((20, 16), np.float32)}
    store.write_video("v", new_rgb, None, {"i3d_rgb": prov("other", "2")})
    assert store.load("v", ["i3d_rgb"])["i3d_rgb"].sum() == 0
    assert store.provenance("v")["i3d_rgb"].extractor == "other"
    assert store.provenance("v")["i3d_flow"].extractor == "test"


def test_replace_all_drops_stale_features(store):
    f = feats(20)
    store.write_video("v", f, info(), provs(f))
    g = {"i3d_rgb": np.ones((30, 16), np.float32)}
    store.write_video("v", g, info(), provs(g), replace_all=True)
    assert store.features_of("v") == {"i3d_rgb"} and store.num_snippets("v") == 30


def test_fingerprint_tracks_content(store):
    empty = store.fingerprint()
    f = feats(10)
    store.write_video("v", f, info(), provs(f))
    fp1 = store.fingerprint()
    assert fp1 != empty
    store.write_video("v", {"i3d_rgb": f["i3d_rgb"]}, None, {"i3d_rgb": prov()})  # same content again
    assert store.fingerprint() == fp1
    changed = {"i3d_rgb": f["i3d_rgb"] + 1}
    store.write_video("v", changed, None, {"i3d_rgb": prov()})
    assert store.fingerprint() not in (fp1, empty)


def test_open_and_open_or_create(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(tmp_path / "missing.zarr")
    s = FeatureStore.open_or_create(tmp_path / "a.zarr", grid=SnippetGrid(10.0, 8, 8), name="demo")
    again = FeatureStore.open_or_create(tmp_path / "a.zarr", grid=SnippetGrid(10.0, 8, 8))
    assert again.grid == s.grid and again.name == "demo"
    with pytest.raises(StoreError, match="snippet grid"):
        FeatureStore.open_or_create(tmp_path / "a.zarr", grid=SnippetGrid(25.0, 16, 16))
    with pytest.raises(StoreError, match="already exists"):
        FeatureStore.create(tmp_path / "a.zarr")


def test_iter_videos_in_order_with_prefetch(store):
    ids = [f"v{i:03d}" for i in range(25)]
    for i, vid in enumerate(ids):
        f = feats(5 + i, seed=i)
        store.write_video(vid, f, info(vid), provs(f))
    seen = [(vid, d["i3d_rgb"].shape[0]) for vid, d in store.iter_videos(["i3d_rgb"], prefetch=4, workers=3)]
    assert seen == [(vid, 5 + i) for i, vid in enumerate(ids)]


def test_grid_math():
    g = SnippetGrid(25.0, 16, 16)
    assert g.num_snippets(15) == 0 and g.num_snippets(16) == 1 and g.num_snippets(47) == 2 and g.num_snippets(48) == 3
    assert g.snippet_seconds == pytest.approx(0.64) and g.snippet_center_seconds(0) == pytest.approx(0.32)
    with pytest.raises(ValueError):
        SnippetGrid(0, 16, 16)


# ---------------------------------------------------------------- bad input, each class named in the issue
def _write(store, vid, f, **kw):
    store.write_video(vid, f, info(vid), provs(f), **kw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_nan_inf(store, bad):
    f = feats(10)
    f["clip_vitb16"][3, 2] = bad
    with pytest.raises(StoreError, match=r"video 'v'.*clip_vitb16.*NaN/Inf.*snippet 3, dim 2"):
        _write(store, "v", f)
    assert store.list_videos() == []


def test_a_float64_value_beyond_float32_is_named_as_such(store, recwarn):
    f = feats(10)
    f["clip_vitb16"] = f["clip_vitb16"].astype(np.float64)
    f["clip_vitb16"][3, 2] = 1e300  # (was reported as NaN/Inf, with numpy's overflow warning)
    with pytest.raises(StoreError, match=r"clip_vitb16.*a value beyond float32's range.*snippet 3, dim 2"):
        _write(store, "v", f)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_rejects_wrong_dimension(store):
    f = feats(10)
    f["i3d_rgb"] = np.zeros((10, 15), np.float32)
    with pytest.raises(StoreError, match=r"video 'v'.*'i3d_rgb' has dimension 15, expected 16"):
        _write(store, "v", f)


def test_rejects_wrong_ndim_and_dtype(store):
    with pytest.raises(StoreError, match="must be 2-D"):
        _write(store, "v", {"i3d_rgb": np.zeros(10, np.float32)})
    with pytest.raises(StoreError, match="dtype int64"):
        _write(store, "v", {"i3d_rgb": np.zeros((10, 16), np.int64)})


def test_rejects_mismatched_t(store):
    f = feats(10)
    f["i3d_flow"] = np.zeros((11, 16), np.float32)
    with pytest.raises(StoreError, match=r"video 'v'.*disagree.*i3d_flow: T=11.*i3d_rgb: T=10"):
        _write(store, "v", f)


def test_rejects_t_mismatch_with_stored(store):
    f = feats(10, {"i3d_rgb": 16})
    _write(store, "v", f)
    with pytest.raises(StoreError, match="already stored: T=10"):
        store.write_video("v", {"i3d_flow": np.zeros((12, 16), np.float32)}, None, {"i3d_flow": prov()})
    assert store.features_of("v") == {"i3d_rgb"}


@pytest.mark.parametrize("vid", ["", "  ", "a/b", "..", "a..b", "../x", "a\\b", ".hidden", "x\x00y", " pad"])
def test_rejects_unsafe_video_ids(store, vid):
    with pytest.raises(StoreError, match="video id"):
        _write(store, vid, feats(5))
    assert store.list_videos() == []


def test_youtube_ids_starting_with_underscore_or_dash_are_stored(store):
    """126 ActivityNet v1.2 ids start with '_' (2 with '__'), 139 with '-': they were refused."""
    for vid in ("_-JNaelSKO8", "__dXUJsj3yo", "-0ieXc9cHnE"):
        _write(store, vid, feats(5))
    assert store.list_videos() == sorted(["_-JNaelSKO8", "__dXUJsj3yo", "-0ieXc9cHnE"])
    assert store.load("__dXUJsj3yo", ["i3d_rgb"])["i3d_rgb"].shape == (5, 16)


def test_rejects_unknown_feature_names(store):
    with pytest.raises(StoreError, match=r"video 'v'.*unknown feature 'resnet'"):
        _write(store, "v", {"resnet": np.zeros((5, 16), np.float32)})
    _write(store, "v", feats(5))
    with pytest.raises(StoreError, match="unknown feature 'resnet'"):
        store.load("v", ["resnet"])


def test_load_missing_video_or_feature(store):
    with pytest.raises(StoreError, match="video 'nope': not in store"):
        store.load("nope")
    f = feats(5, {"i3d_rgb": 16})
    _write(store, "v", f)
    with pytest.raises(StoreError, match="'clip_vitb16' not extracted yet"):
        store.load("v", ["clip_vitb16"])


def test_requires_provenance_info_and_mask(store):
    f = feats(5, {"i3d_rgb": 16})
    with pytest.raises(StoreError, match="no provenance given for feature 'i3d_rgb'"):
        store.write_video("v", f, info(), {})
    with pytest.raises(StoreError, match="VideoInfo is required"):
        store.write_video("v", f, None, provs(f))
    with pytest.raises(StoreError, match="vggish' must be written together with 'audio_mask'"):
        store.write_video("v", {"vggish": np.zeros((5, 4), np.float32)}, info(), {"vggish": prov()})
    with pytest.raises(StoreError, match="zero snippets"):
        store.write_video("v", {"i3d_rgb": np.zeros((0, 16), np.float32)}, info(), {"i3d_rgb": prov()})


def test_store_metadata_is_plain_json(store):
    root = json.loads((store.path / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["attributes"]["clipae_store"]["grid"]["fps"] == 25.0


def test_verify_finds_corruption_in_features_audio_mask_and_time(tmp_path, capsys):
    from clipae.cli import main as cli

    s = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS, codec=CodecSpec("none"))
    f = feats(12)
    for vid in ("a", "b"):
        s.write_video(vid, f, info(vid), provs(f))
    assert s.verify("a") == [] and cli(["store", "verify", str(s.path)]) == 0
    capsys.readouterr()

    def flip(rel: str, at: int) -> None:
        chunk = s.path / "videos" / rel
        data = bytearray(chunk.read_bytes())
        data[at] ^= 0x01
        chunk.write_bytes(bytes(data))

    flip("a/audio_mask/c/0", 3)  # a bool stays a valid bool; only the recorded hash can tell
    flip("a/time/c/0", 13)
    flip("b/i3d_rgb/c/0/0", 7)
    assert sorted(s.verify("a")) == ["audio_mask", "time"] and s.verify("b") == ["i3d_rgb"]
    assert cli(["store", "verify", str(s.path)]) == 1
    out = capsys.readouterr().out
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("MISMATCH")}
    assert set(lines) == {"MISMATCH a/audio_mask", "MISMATCH a/time", "MISMATCH b/i3d_rgb"}
    recorded = s.video_meta("b")["features"]["i3d_rgb"]["sha256"][:12]
    assert lines["MISMATCH b/i3d_rgb"].startswith(f"content hash mismatch: recorded sha256 {recorded}..., computed ")
    assert lines["MISMATCH a/time"].startswith("time coordinate off at 1 of 12 snippets: snippet 1 is at ")
    assert "verified 2 videos, 3 mismatches" in out
    assert cli(["store", "verify", "--json", str(s.path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 2 and sorted((m["video"], m["item"]) for m in report["mismatches"]) == [
        ("a", "audio_mask"), ("a", "time"), ("b", "i3d_rgb")]
    assert all(m["detail"] == lines[f"MISMATCH {m['video']}/{m['item']}"] for m in report["mismatches"])


def test_create_refuses_a_file_or_a_directory_holding_other_files(tmp_path):
    """`--store ~/data` must not turn a user's directory into a store; a file there was a FileExistsError."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="exists and is not a directory"):
        FeatureStore.create(tmp_path / "afile")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match=r"holding other files \(1, e.g. 'notes.txt'\) is not a feature store"):
        FeatureStore.create(tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert FeatureStore.create(tmp_path / "empty").list_videos() == []


def test_create_accepts_hidden_files_lost_found_and_a_concurrent_creators_store(tmp_path):
    vol = tmp_path / "vol"
    (vol / "lost+found").mkdir(parents=True)
    (vol / ".DS_Store").write_bytes(b"x")
    assert FeatureStore.create(vol).list_videos() == []
    # a concurrent creator published first: open_or_create opens its store instead of failing
    first = FeatureStore.create(tmp_path / "race")
    assert FeatureStore.open_or_create(tmp_path / "race").path == first.path


# ----------------------------------------------------------------- damaged stores: errors that name the file
def _damaged_store(tmp_path, codec="none", t=25):
    s = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS, codec=CodecSpec(codec), chunk_snippets=10)
    f = feats(t)  # chunks of 10 snippets: 0/0 and 1/0 exact, 2/0 the tail
    s.write_video("vid", f, info("vid"), provs(f))
    return s, f


@pytest.mark.parametrize("codec", ["none", "blosc-lz4", "zstd"])
@pytest.mark.parametrize("chunk", ["0/0", "2/0"])  # an exact chunk and the tail chunk
@pytest.mark.parametrize("damage", ["halved", "extra bytes"])
def test_truncated_or_overlong_chunk_file_is_an_error_naming_it(tmp_path, codec, chunk, damage):
    """The fast reader filled np.empty with readinto/decompress unchecked: half a chunk file gave garbage."""
    s, f = _damaged_store(tmp_path, codec)
    path = s.path / "videos" / "vid" / "i3d_rgb" / "c" / chunk
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "halved" else raw + b"\0" * 8)
    with pytest.raises(StoreError) as e:
        FeatureStore.open(s.path).load("vid")
    msg = str(e.value)
    assert "video 'vid'" in msg and "'i3d_rgb'" in msg and str(path) in msg and "clipae store verify" in msg, msg
    if codec == "none":
        assert f"wrong size: {len(path.read_bytes())} bytes, expected {len(raw)}" in msg
    assert s.load("vid", ["i3d_flow"])["i3d_flow"].shape == (25, 16)  # the other arrays still read
    assert s.verify_report("vid") == {"i3d_rgb": msg.split("'i3d_rgb' ", 1)[1].split("; ")[0]}


def test_zstd_chunk_that_decodes_to_too_few_bytes_is_an_error(tmp_path):
    """A valid zstd frame of the wrong size decodes into a bigger buffer without complaint."""
    import numcodecs

    s, f = _damaged_store(tmp_path, "zstd")
    path = s.path / "videos" / "vid" / "i3d_rgb" / "c" / "0" / "0"
    path.write_bytes(numcodecs.Zstd().encode(f["i3d_rgb"][:5]))
    with pytest.raises(StoreError, match=r"wrong size: decodes to 320 bytes, expected 640"):
        s.load("vid")


def test_deleted_feature_array_is_reported_missing_not_as_concurrent_change(tmp_path, capsys):
    import shutil

    from clipae.cli import main as cli

    s, f = _damaged_store(tmp_path)
    assert s.missing_arrays("vid") == set()
    shutil.rmtree(s.path / "videos" / "vid" / "i3d_rgb")
    assert s.missing_arrays("vid") == {"i3d_rgb"}
    with pytest.raises(StoreError) as e:
        s.load("vid")
    msg = str(e.value)
    assert "kept changing" not in msg and "'i3d_rgb'" in msg and "missing" in msg, msg
    assert str(s.path / "videos" / "vid" / "i3d_rgb" / "zarr.json") in msg and "clipae extract" in msg
    np.testing.assert_array_equal(s.load("vid", ["i3d_flow"])["i3d_flow"], f["i3d_flow"])
    assert cli(["store", "verify", str(s.path)]) == 1
    assert f"MISMATCH vid/i3d_rgb: array missing: {s.path / 'videos' / 'vid' / 'i3d_rgb' / 'zarr.json'}" in (
        capsys.readouterr().out.splitlines())


def test_writing_some_features_refuses_to_keep_a_missing_array_and_rewriting_it_repairs(tmp_path):
    """A merge hard-links the kept arrays: one that is gone must not be published as kept."""
    import shutil

    s, f = _damaged_store(tmp_path)
    shutil.rmtree(s.path / "videos" / "vid" / "i3d_flow")
    g = {"clip_vitb16": np.ones((25, 8), np.float32)}
    with pytest.raises(StoreError, match=r"video 'vid': stored feature\(s\) \['i3d_flow'\] have no array on disk"):
        s.write_video("vid", g, None, provs(g))
    s.write_video("vid", {"i3d_flow": f["i3d_flow"]}, None, provs(["i3d_flow"]))  # what re-extraction does
    assert s.missing_arrays("vid") == set() and s.verify("vid") == []
    np.testing.assert_array_equal(s.load("vid")["i3d_rgb"], f["i3d_rgb"])


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b'{"attributes": {}}', None])
def test_corrupt_video_metadata_names_the_video_and_file(tmp_path, capsys, content):
    from clipae.cli import main as cli

    s, f = _damaged_store(tmp_path)
    s.write_video("good", f, info("good"), provs(f))
    meta = s.path / "videos" / "vid" / "zarr.json"
    if content is None:
        meta.unlink()
    else:
        meta.write_bytes(content)
    with pytest.raises(StoreError) as e:
        s.load("vid")
    assert "video 'vid'" in str(e.value) and str(meta) in str(e.value), str(e.value)
    # ls and info list the damaged video and go on with the rest (exit 1); verify says what is wrong
    assert cli(["store", "ls", str(s.path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("good\tT=25\t") and out[1].startswith("vid\tDAMAGED\tvideo 'vid': ")
    assert str(meta) in out[1]
    assert cli(["store", "ls", "--json", str(s.path)]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["T"] == 25 and rows[1]["video"] == "vid" and str(meta) in rows[1]["damaged"]
    assert cli(["store", "info", "--json", str(s.path)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 2 and summary["videos_per_feature"]["i3d_rgb"] == 1 and summary["fingerprint"] is None
    assert list(summary["damaged_videos"]) == ["vid"]
    assert cli(["store", "verify", "--json", str(s.path)]) == 1
    [m] = json.loads(capsys.readouterr().out)["mismatches"]
    assert (m["video"], m["item"]) == ("vid", "metadata") and m["detail"].startswith(f"unreadable metadata file {meta}")


def test_verify_names_a_missing_chunk_file(tmp_path, capsys):
    from clipae.cli import main as cli

    s, f = _damaged_store(tmp_path)
    chunk = s.path / "videos" / "vid" / "i3d_rgb" / "c" / "1" / "0"
    chunk.unlink()  # zarr reads it as zeros: only the hash tells, and the missing file is the likely cause
    [detail] = s.verify_report("vid").values()
    assert detail.startswith("content hash mismatch: recorded sha256 ")
    assert f"missing (read as zeros): {chunk}" in detail
    assert cli(["store", "verify", str(s.path)]) == 1
    assert f"MISMATCH vid/i3d_rgb: {detail}" in capsys.readouterr().out.splitlines()


def test_store_info_counts_many_damaged_videos_instead_of_listing_them_all(tmp_path, capsys):
    """Scale review: 300 damaged videos gave 300 long stderr lines (139 KB) and no count in the summary."""
    from clipae.cli import main as cli
    from clipae.commands.store import SHOWN_DAMAGED

    s, f = _damaged_store(tmp_path)
    for i in range(SHOWN_DAMAGED + 5):
        s.write_video(f"v{i:02d}", f, info(f"v{i:02d}"), provs(f))
        (s.path / "videos" / f"v{i:02d}" / "zarr.json").write_bytes(b"{broken")
    assert cli(["store", "info", str(s.path)]) == 1
    captured = capsys.readouterr()
    assert f"damaged videos: {SHOWN_DAMAGED + 5}" in captured.out
    assert captured.err.count("damaged video v") == SHOWN_DAMAGED
    assert f"{SHOWN_DAMAGED + 5} damaged videos in all" in captured.err


def test_inspecting_a_store_damaged_in_odd_ways_names_the_damage(tmp_path, capsys):
    """Adversarial review: an unreadable video zarr.json (here a directory in its place, or a symlink loop), a
    directory under a name no id can have, or a file in place of _staging/trash made info/ls fail for the whole
    store; a damaged videos/zarr.json (outside readers cannot open the group) and symlinked video folders (that
    they follow) passed verify; a corrupted array shape made verify allocate petabytes; a missing time chunk was
    not named; an empty path inspected the current directory."""
    import os
    import shutil

    from clipae.cli import main as cli

    s = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS, codec=CodecSpec("none"))
    f = feats(12)
    for vid in ("a", "b", "c", "d", "e"):
        s.write_video(vid, f, info(vid), provs(f))
    videos = s.path / "videos"
    (videos / "a" / "zarr.json").unlink()
    (videos / "a" / "zarr.json").mkdir()  # (OSError other than "missing")
    (videos / "b" / "zarr.json").unlink()
    (videos / "b" / "zarr.json").symlink_to("zarr.json")  # (a loop)
    shutil.copytree(videos / "e", videos / "bad:name")
    shutil.rmtree(s.path / "_staging" / "trash")
    (s.path / "_staging" / "trash").write_text("")
    assert cli(["store", "ls", str(s.path)]) == 1
    out = capsys.readouterr().out
    assert "a\tDAMAGED" in out and "b\tDAMAGED" in out and "bad:name\tDAMAGED" in out and "not a valid video id" in out
    assert "c\tT=12" in out and "e\tT=12" in out
    assert cli(["store", "info", str(s.path)]) == 1
    capsys.readouterr()

    ameta = videos / "c" / "i3d_rgb" / "zarr.json"
    doc = json.loads(ameta.read_text())
    doc["shape"] = [10**12, 16]
    ameta.write_text(json.dumps(doc))
    (videos / "d" / "time" / "c" / "0").unlink()
    (videos / "zarr.json").write_text('{"zarr_for')
    os.symlink(videos / "e", videos / "elink")
    assert cli(["store", "verify", str(s.path)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH videos/zarr.json: " in out and "MISMATCH videos/elink: " in out and "symbolic link" in out
    assert "MISMATCH c/i3d_rgb: array shape (1000000000000, 16)" in out
    assert "MISMATCH d/time: " in out and "chunk file(s) missing" in out
    assert cli(["store", "info", ""]) == 2 and "empty store path" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(clipae_store=[1]), "is not an object"),
    (lambda a: a["clipae_store"].update(format_version=None), "'format_version' must be an integer"),
    (lambda a: a["clipae_store"].update(format_version="2.0"), "'format_version' must be an integer"),
    (lambda a: a["clipae_store"].pop("grid"), "lacks 'grid'"),
    (lambda a: a["clipae_store"].update(features={"clip_vitb16": "x"}), "invalid 'clipae_store' attributes"),
])
def test_malformed_root_metadata_is_one_line_naming_the_file(tmp_path, capsys, edit, message):
    from clipae.cli import main as cli

    s = FeatureStore.create(tmp_path / "s.zarr", features=SMALL_DIMS)
    doc = json.loads((s.path / "zarr.json").read_text())
    edit(doc["attributes"])
    (s.path / "zarr.json").write_text(json.dumps(doc))
    assert cli(["store", "info", str(s.path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(s.path / "zarr.json") in err and "Traceback" not in err, err
    doc["attributes"] = None
    (s.path / "zarr.json").write_text(json.dumps(doc))
    assert cli(["store", "info", str(s.path)]) == 2 and "not a clipae feature store" in capsys.readouterr().err


def test_a_new_id_equal_to_a_stored_one_up_to_case_is_refused(store):
    """Adversarial review: `Clip` from one run and `clip` from another were both stored: one directory on
    macOS/Windows file systems (within one manifest such ids were already refused)."""
    f = feats(5)
    _write(store, "Clip", f)
    with pytest.raises(StoreError, match=r"video 'clip': the store holds 'Clip'"):
        _write(store, "clip", f)
    with pytest.raises(StoreError, match="the store holds 'caf\u00e9'"):
        _write(store, "caf\u00e9", f)
        _write(store, "cafe\u0301", f)
    _write(store, "Clip", feats(5, seed=1))  # (the same id: a rewrite, not a twin)
    assert sorted(store.list_videos()) == ["Clip", "caf\u00e9"]
